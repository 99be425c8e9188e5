//! `fgclip convert-backbone`: the conversion itself is tested bit for bit in `fgclip-train/tests/init_backbone.rs`;
//! here, the command's refusals and its output loading in the other commands.

use crate::common;
use common::*;

#[test]
fn convert_backbone_refuses_an_fgclip_checkpoint_and_an_occupied_output() {
    let Some(fx) = fixtures() else { return };
    let tmp = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli_convert_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let model = fx.join("fgclip_v1/model");
    let out = tmp.join("converted");

    // Already FG-CLIP: refused with the reason, naming the config file.
    let o = fgclip(&["convert-backbone", model.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("already an FG-CLIP checkpoint") && e.contains("config.json"), "{e}");
    assert!(!out.join("model.safetensors").exists());

    // A CLIP backbone (the fixture relabelled `CLIPModel`; its FG-CLIP tensors are overwritten by the
    // conversion, as the official `--from_openai` path does) converts, and the result loads in `fgclip info`.
    let clip = tmp.join("clip");
    std::fs::create_dir_all(&clip).unwrap();
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "vocab.json",
        "merges.txt",
        "preprocessor_config.json",
        "tokenizer_config.json",
    ] {
        if model.join(f).is_file() {
            std::fs::copy(model.join(f), clip.join(f)).unwrap();
        }
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    cfg["architectures"] = serde_json::json!(["CLIPModel"]);
    std::fs::write(clip.join("config.json"), cfg.to_string()).unwrap();
    let o = fgclip(&["convert-backbone", clip.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info = ok_json(&fgclip(&["info", "-m", out.to_str().unwrap(), "--json"]));
    assert_eq!(info["family"], "FG-CLIP", "{info}");
    assert_eq!(info["text_len"]["long"], 248, "{info}");

    // A second conversion into the same folder needs --overwrite.
    let o = fgclip(&["convert-backbone", clip.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    let o = fgclip(&["convert-backbone", clip.to_str().unwrap(), out.to_str().unwrap(), "--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&tmp);
}
