//! `fgclip classify` end to end: the built binary on the tiny random fixture checkpoints and fixture photos.
//! The models are random, so these pin the output contract (shapes, probability conventions, errors), never
//! which label wins.

use crate::common;
use common::*;
use std::path::PathBuf;

#[test]
fn fgclip_probabilities_are_a_softmax_over_labels() {
    let Some(f) = fixtures() else { return };
    let model = s(&f.join("fgclip_v1/model"));
    let (cat, cups) = (s(&f.join("images/cat_dfclor.jpg")), s(&f.join("images/df_cups.png")));
    let o = fgclip(&["classify", "-m", &model, &cat, &cups, "--labels", "cat,dog,a red cup", "--json"]);
    let j = ok_json(&o);
    assert_eq!(j["family"], "FG-CLIP");
    assert_eq!(j["probability"], "softmax");
    let results = j["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!((results[0]["width"].as_u64(), results[0]["height"].as_u64()), (Some(640), Some(480)));
    assert_eq!((results[1]["width"].as_u64(), results[1]["height"].as_u64()), (Some(1024), Some(500)));
    for r in results {
        let p: Vec<f64> = r["probabilities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(p.len(), 3);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{p:?}");
        let top = r["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // Ranked best first.
        let tp: Vec<f64> = top.iter().map(|t| t["probability"].as_f64().unwrap()).collect();
        assert!(tp.windows(2).all(|w| w[0] >= w[1]), "{tp:?}");
    }
    // Human output says which convention it uses.
    let o = fgclip(&["classify", "-m", &model, &cat, "--labels", "cat,dog"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("softmax"));
}

#[test]
fn fgclip2_probabilities_are_independent_sigmoids() {
    let Some(f) = fixtures() else { return };
    let model = s(&f.join("fgclip2/model"));
    let part = s(&f.join("images/part.jpg"));
    let o =
        fgclip(&["classify", "-m", &model, &part, "--labels", "cat,dog,a red cup,a laptop", "--top", "2", "--json"]);
    let j = ok_json(&o);
    assert_eq!(j["family"], "FG-CLIP 2");
    assert_eq!(j["probability"], "sigmoid");
    let r = &j["results"][0];
    let p: Vec<f64> = r["probabilities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(p.len(), 4);
    assert!(p.iter().all(|v| (0.0..=1.0).contains(v)), "{p:?}");
    assert_eq!(r["top"].as_array().unwrap().len(), 2);

    let o = fgclip(&["classify", "-m", &model, &part, "--labels", "cat,dog", "--max-patches", "256"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("sigmoid"));
}

#[test]
fn labels_file_and_templates() {
    let Some(f) = fixtures() else { return };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli_classify_labels");
    std::fs::create_dir_all(&dir).unwrap();
    let lf = dir.join("labels.txt");
    std::fs::write(&lf, "# animals\ncat\n\n dog \n").unwrap();
    let o = fgclip(&[
        "classify",
        "-m",
        &s(&f.join("fgclip2/model")),
        &s(&f.join("images/cat_dfclor.jpg")),
        "--labels-file",
        &s(&lf),
        "--labels",
        "bird",
        "--template",
        "a photo of a {}.",
        "--template",
        "a close-up photo of the {}.",
        "--json",
    ]);
    let j = ok_json(&o);
    assert_eq!(j["labels"], serde_json::json!(["bird", "cat", "dog"]));
    assert_eq!(j["results"][0]["probabilities"].as_array().unwrap().len(), 3);
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let Some(f) = fixtures() else { return };
    let model = s(&f.join("fgclip_v1/model"));
    let cat = s(&f.join("images/cat_dfclor.jpg"));

    let o = fgclip(&["classify", "-m", &model, &cat, "--labels", " , ,"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("label list is empty"), "{}", stderr(&o));

    let o = fgclip(&["classify", "-m", &model, &cat]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("label list is empty"), "{}", stderr(&o));

    let missing = s(&f.join("images/no_such_image.jpg"));
    let o = fgclip(&["classify", "-m", &model, &cat, &missing, "--labels", "cat"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no_such_image.jpg") && stderr(&o).contains("not found"), "{}", stderr(&o));

    let o = fgclip(&["classify", "-m", &model, &cat, "--labels", "cat", "--template", "a photo"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--template"), "{}", stderr(&o));

    let o = fgclip(&["classify", "-m", &model, &cat, "--labels-file", "/nonexistent/labels.txt"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/labels.txt"), "{}", stderr(&o));

    // A file that is not an image: the message names it.
    let o = fgclip(&["classify", "-m", &model, &s(&f.join("fgclip_v1/model/config.json")), "--labels", "cat"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("config.json"), "{}", stderr(&o));
}
