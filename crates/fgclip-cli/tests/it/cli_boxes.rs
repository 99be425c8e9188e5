//! `fgclip boxes` end to end: the built binary on the tiny random fixture checkpoints and fixture photos.
//! Pins one label per box, the softmax(100·cos) scores, degenerate-box handling, the drawn PNG and the errors;
//! the models are random, so never which label wins.

use crate::common;
use common::*;
use std::path::PathBuf;

#[test]
fn one_label_per_box_and_a_drawing_fgclip2() {
    let Some(f) = fixtures() else { return };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli_boxes_v2");
    let out = dir.join("nested/boxes.png");
    let _ = std::fs::remove_file(&out);
    let o = fgclip(&[
        "boxes",
        "-m",
        &s(&f.join("fgclip2/model")),
        &s(&f.join("images/df_cups.png")),
        "--box",
        "50,40,400,450",
        "--box",
        "420,60,700,470",
        "--box",
        "-20,-20,1100,520",
        "--box",
        "700,20,1000,20",
        "--labels",
        "a paper cup,a glass,a grey bowl",
        "--draw",
        &s(&out),
        "--json",
    ]);
    let j = ok_json(&o);
    assert_eq!(j["family"], "FG-CLIP 2");
    assert_eq!(j["walk"], "box");
    let boxes = j["boxes"].as_array().unwrap();
    assert_eq!(boxes.len(), 4);
    for b in &boxes[..3] {
        let label = b["label"].as_str().expect("a label per valid box");
        assert!(["a paper cup", "a glass", "a grey bowl"].contains(&label));
        let scores: Vec<f64> = b["scores"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(scores.len(), 3);
        assert!((scores.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{scores:?}");
        let score = b["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
        assert!(scores.iter().all(|v| *v <= score + 1e-9));
        assert!(b["runner_up"]["score"].as_f64().unwrap() <= score);
        assert_ne!(b["runner_up"]["label"], b["label"]);
    }
    // The degenerate box: no label, a note, a warning, and no NaN anywhere.
    assert!(boxes[3]["label"].is_null());
    assert!(boxes[3]["note"].as_str().unwrap().contains("degenerate"));
    assert!(stderr(&o).contains("--box #4") && stderr(&o).contains("degenerate"), "{}", stderr(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).to_lowercase().contains("nan"));
    assert_eq!(png_size(&out), (1024, 500));
}

#[test]
fn fgclip_boxes_human_output() {
    let Some(f) = fixtures() else { return };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli_boxes_v1");
    let out = dir.join("boxes.png");
    let o = fgclip(&[
        "boxes",
        "-m",
        &s(&f.join("fgclip_v1/model")),
        &s(&f.join("images/cat_dfclor.jpg")),
        "--box",
        "330,60,600,460",
        "--box",
        "150,220,330,480",
        "--box",
        "10,10,5,5",
        "--labels",
        "a white cat,a black cat",
        "--draw",
        &s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("FG-CLIP") && text.contains("text walk short") && text.contains("softmax(100"), "{text}");
    assert!(text.contains("runner-up"), "{text}");
    assert!(text.contains("no label"), "{text}");
    assert_eq!(png_size(&out), (640, 480));
}

#[test]
fn box_errors_name_the_problem() {
    let Some(f) = fixtures() else { return };
    let model = s(&f.join("fgclip2/model"));
    let cat = s(&f.join("images/cat_dfclor.jpg"));
    let run = |extra: &[&str]| {
        let mut a = vec!["boxes", "-m", &model, &cat];
        a.extend_from_slice(extra);
        fgclip(&a)
    };

    for bad in ["1,2,3", "1,2,x,4", "1,2,3,4,5", "nan,0,10,10"] {
        let o = run(&["--box", "0,0,10,10", "--box", bad, "--labels", "cat"]);
        assert!(!o.status.success(), "{bad} accepted");
        assert!(stderr(&o).contains("--box #2") && stderr(&o).contains("x1,y1,x2,y2"), "{bad}: {}", stderr(&o));
    }

    let o = run(&["--box", "100000,100000,200000,200000", "--labels", "cat"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--box #1") && stderr(&o).contains("far outside"), "{}", stderr(&o));

    let o = run(&["--box", "0,0,10,10", "--labels", ","]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("label list is empty"), "{}", stderr(&o));

    let o = run(&["--labels", "cat"]);
    assert!(!o.status.success(), "no --box accepted");
    assert!(stderr(&o).contains("--box"), "{}", stderr(&o));

    let o = fgclip(&["boxes", "-m", &model, "/nonexistent/img.png", "--box", "0,0,1,1", "--labels", "cat"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/img.png"), "{}", stderr(&o));

    // Negative coordinates parse (not taken for flags) and a box partly outside is fine.
    let o = run(&["--box", "-10,-10,100,100", "--labels", "cat,dog", "--json"]);
    let j = ok_json(&o);
    assert!(j["boxes"][0]["label"].is_string());

    // Only degenerate boxes: every box gets "no label", exit 0.
    let o = run(&["--box", "10,10,10,50", "--box", "10,50,40,20", "--labels", "cat,dog", "--json"]);
    let j = ok_json(&o);
    assert!(j["boxes"].as_array().unwrap().iter().all(|b| b["label"].is_null()));
    assert!(j["boxes"][1]["note"].as_str().unwrap().contains("y2 <= y1"));
}
