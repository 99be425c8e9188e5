//! `fgclip features` against the official outputs, run exactly as a user (and the acceptance check) runs it:
//! photo files, raw strings, pixel boxes in a JSON file → one safetensors file.

use crate::common;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{fgclip, fixtures, stderr};

use candle_core::{Device, IndexOp, Tensor};

/// Unnormalised features; measured ≤ 4e-6 (see crates/fgclip/tests/parity_*.rs).
const TOL: f32 = 2e-5;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("fgclip-cli-{}-{name}", std::process::id()))
}

fn load(p: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(p, &Device::Cpu).unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

#[track_caller]
fn close(what: &str, a: &Tensor, b: &Tensor) {
    let d = max_abs(a, b);
    eprintln!("{what}: {d:.2e}");
    assert!(d <= TOL, "{what}: max abs diff {d}");
}

/// Runs `fgclip` and requires success.
fn fgclip_ok(args: &[&str]) -> std::process::Output {
    let out = fgclip(args);
    assert!(out.status.success(), "fgclip {args:?} failed: {}", stderr(&out));
    out
}

fn images(fx: &Path) -> Vec<String> {
    ["cat_dfclor.jpg", "part.jpg", "df_cups.png"]
        .iter()
        .map(|n| fx.join("images").join(n).display().to_string())
        .collect()
}

#[test]
fn features_command_fgclip1() {
    let Some(fx) = fixtures() else { return };
    let model = fx.join("fgclip_v1/model").display().to_string();
    let exp = load(&fx.join("fgclip_v1/expected.safetensors"));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("fgclip_v1/manifest.json")).unwrap()).unwrap();
    let boxes_obj = &manifest["boxes_pixel_xyxy"];
    let names = ["cat_dfclor.jpg", "part.jpg", "df_cups.png"];
    let boxes: Vec<serde_json::Value> = names.iter().map(|n| boxes_obj[n].clone()).collect();
    let boxes_file = tmp("v1-boxes.json");
    std::fs::write(&boxes_file, serde_json::to_string(&boxes).unwrap()).unwrap();
    let out = tmp("v1-short.safetensors");
    let mut args: Vec<String> = vec!["features".into(), "--model".into(), model.clone()];
    for i in images(&fx) {
        args.extend(["--image".into(), i]);
    }
    for c in manifest["captions_short"].as_array().unwrap() {
        args.extend(["--text".into(), c.as_str().unwrap().into()]);
    }
    args.extend([
        "--boxes".into(),
        boxes_file.display().to_string(),
        "--dense".into(),
        "--out".into(),
        out.display().to_string(),
    ]);
    fgclip_ok(&args.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let got = load(&out);
    close("image_embeds", &got["image_embeds"], &exp["image_embeds"]);
    close("text_embeds (short)", &got["text_embeds"], &exp["text_embeds_short"]);
    close("roi_embeds", &got["roi_embeds"], &exp["roi_embeds"]);
    for i in 0..3 {
        let want = exp["dense_embeds"].i(i).unwrap().reshape((7, 7, 48)).unwrap();
        close(&format!("dense_embeds.{i}"), &got[&format!("dense_embeds.{i}")], &want);
    }
    // Long captions through a texts file.
    let texts = tmp("v1-long.txt");
    let long: Vec<&str> = manifest["captions_long"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    std::fs::write(&texts, long.join("\n")).unwrap();
    let out2 = tmp("v1-long.safetensors");
    fgclip_ok(&[
        "features",
        "--model",
        &model,
        "--texts-file",
        texts.to_str().unwrap(),
        "--walk",
        "long",
        "--out",
        out2.to_str().unwrap(),
    ]);
    close("text_embeds (long)", &load(&out2)["text_embeds"], &exp["text_embeds_long"]);
    for p in [boxes_file, out, texts, out2] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn features_command_fgclip2() {
    let Some(fx) = fixtures() else { return };
    let model = fx.join("fgclip2/model").display().to_string();
    let exp = load(&fx.join("fgclip2/expected.safetensors"));
    let inp = load(&fx.join("fgclip2/inputs.safetensors"));
    let px: Vec<Vec<Vec<f64>>> = inp["boxes_pixel_xyxy"].to_vec3().unwrap();
    let boxes_file = tmp("v2-boxes.json");
    std::fs::write(&boxes_file, serde_json::to_string(&px).unwrap()).unwrap();
    let imgs = images(&fx);
    for (set, mp) in [("p64", "64"), ("p128", "128")] {
        let out = tmp(&format!("v2-{set}.safetensors"));
        let mut args = vec![
            "features",
            "--model",
            &model,
            "--max-patches",
            mp,
            "--boxes",
            boxes_file.to_str().unwrap(),
            "--dense",
            "--out",
        ];
        let outs = out.display().to_string();
        args.push(&outs);
        for i in &imgs {
            args.extend(["--image", i.as_str()]);
        }
        fgclip_ok(&args);
        let got = load(&out);
        close(&format!("{set}.image_embeds"), &got["image_embeds"], &exp[&format!("{set}.image_embeds")]);
        close(&format!("{set}.roi_embeds"), &got["roi_embeds"], &exp[&format!("{set}.region_embeds")]);
        let shapes: Vec<Vec<i64>> = inp[&format!("{set}.spatial_shapes")].to_vec2().unwrap();
        for (i, s) in shapes.iter().enumerate() {
            let (h, w) = (s[0] as usize, s[1] as usize);
            let want = exp[&format!("{set}.dense_embeds")]
                .i(i)
                .unwrap()
                .narrow(0, 0, h * w)
                .unwrap()
                .reshape((h, w, 64))
                .unwrap();
            close(&format!("{set}.dense_embeds.{i}"), &got[&format!("dense_embeds.{i}")], &want);
        }
        let _ = std::fs::remove_file(&out);
    }
    // Default budget: the dynamic bucket (cat → 1024 patches).
    let out = tmp("v2-dyn.safetensors");
    fgclip_ok(&["features", "--model", &model, "--image", &imgs[0], "--out", out.to_str().unwrap()]);
    close("dyn.image_embeds", &load(&out)["image_embeds"], &exp["dyn.image_embeds"]);
    // Raw strings (EN + ZH) per walk, through the checkpoint's tokenizer.
    let strings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("fgclip2/strings.json")).unwrap()).unwrap();
    let exp_s = load(&fx.join("fgclip2/expected_strings.safetensors"));
    for walk in ["short", "box", "long"] {
        let mut args = vec!["features".to_string(), "--model".into(), model.clone(), "--walk".into(), walk.into()];
        for s in strings["strings"][walk].as_array().unwrap() {
            args.extend(["--text".into(), s.as_str().unwrap().into()]);
        }
        args.extend(["--out".into(), out.display().to_string()]);
        fgclip_ok(&args.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        close(
            &format!("str.{walk}.text_embeds"),
            &load(&out)["text_embeds"],
            &exp_s[&format!("str.{walk}.text_embeds")],
        );
    }
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&boxes_file);
}

#[test]
fn features_command_rejects_bad_input_without_panicking() {
    let Some(fx) = fixtures() else { return };
    let model = fx.join("fgclip2/model").display().to_string();
    let out = tmp("bad.safetensors");
    let run = fgclip;
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["features", "--model", &model, "--image", "/nonexistent.jpg", "--out", out.to_str().unwrap()],
            "/nonexistent.jpg",
        ),
        (
            vec!["features", "--model", "/nonexistent-model", "--text", "x", "--out", out.to_str().unwrap()],
            "/nonexistent-model",
        ),
        (
            vec!["features", "--model", &model, "--text", "x", "--walk", "sideways", "--out", out.to_str().unwrap()],
            "sideways",
        ),
        (vec!["features", "--model", &model, "--out", out.to_str().unwrap()], "nothing to do"),
    ];
    for (args, needle) in cases {
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: stderr does not mention {needle:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
    // Boxes file with the wrong number of entries.
    let bf = tmp("bad-boxes.json");
    std::fs::write(&bf, "[[[0,0,10,10]],[]]").unwrap();
    let img = fx.join("images/part.jpg").display().to_string();
    let o = run(&[
        "features",
        "--model",
        &model,
        "--image",
        &img,
        "--boxes",
        bf.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 entries"), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_file(&bf);
}
