//! FG-CLIP 2 NaFlex preprocessing parity with shared/fixtures/fgclip2 (inputs.safetensors, grid_cases.json).
//! Skips (with a message) when the fixtures are absent.

use crate::common;
use common::{fixtures_dir, max_abs_diff, Tensors, FIXTURE_IMAGES};
use fgclip_image::load_rgb;
use fgclip_image::naflex::{self, FGCLIP2_MEAN, FGCLIP2_STD, PATCH_SIZE};

#[test]
fn v2_grid_cases_exact() {
    let Some(dir) = fixtures_dir() else { return };
    let text = std::fs::read_to_string(dir.join("fgclip2/grid_cases.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut checked = 0;
    for c in cases {
        let (h, w) = (c["H"].as_u64().unwrap() as usize, c["W"].as_u64().unwrap() as usize);
        assert_eq!(naflex::bucket_max_patches(h, w), c["determine_max_value"].as_u64().unwrap() as usize, "{h}x{w}");
        for (mp, v) in c["targets"].as_object().unwrap() {
            let mp: usize = mp.parse().unwrap();
            let v: Vec<usize> = v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
            let (th, tw) = naflex::target_size(h, w, 16, mp);
            assert_eq!([th, tw, th / 16, tw / 16], v[..], "H={h} W={w} max_num_patches={mp}");
            checked += 1;
        }
    }
    assert!(checked >= 140, "only {checked} cases");
}

fn check_setting(prefix: &str, files: &[&str], max_patches: Option<usize>) {
    let Some(dir) = fixtures_dir() else { return };
    let t = Tensors::open(&dir.join("fgclip2/inputs.safetensors"));
    let (pv_shape, pv) = t.f32(&format!("{prefix}.pixel_values"));
    let (_, mask) = t.i32(&format!("{prefix}.pixel_attention_mask"));
    let (_, shapes) = t.i64(&format!("{prefix}.spatial_shapes"));
    let imgs: Vec<_> = files.iter().map(|f| load_rgb(&dir.join("images").join(f)).unwrap()).collect();
    let (budget, out) = match max_patches {
        Some(mp) => (mp, naflex::preprocess_many(&imgs, PATCH_SIZE, mp, FGCLIP2_MEAN, FGCLIP2_STD)),
        None => naflex::preprocess_dynamic(&imgs),
    };
    assert_eq!(pv_shape, [files.len(), budget, 768], "{prefix}: budget");
    let batch = naflex::pad_batch(&out, budget);
    assert_eq!(batch.spatial_shapes, shapes, "{prefix}: spatial_shapes");
    assert_eq!(batch.pixel_attention_mask, mask, "{prefix}: pixel_attention_mask");
    for (i, im) in out.iter().enumerate() {
        let want_sum: i32 = mask[i * budget..(i + 1) * budget].iter().sum();
        assert_eq!(im.num_patches() as i32, want_sum, "{prefix}[{i}]: mask sum");
        let n = im.num_patches() * 768;
        let d = max_abs_diff(&im.pixel_values, &pv[i * budget * 768..][..n]);
        eprintln!("{prefix}[{i}] {} grid {}x{}: max abs diff {d:e}", files[i], im.grid_h, im.grid_w);
        assert!(d <= 1e-6, "{prefix}[{i}] {}: pixel_values max abs diff {d}", files[i]);
    }
    // the padded batch equals the processor output everywhere (zero rows included)
    let d = max_abs_diff(&batch.pixel_values, &pv);
    assert!(d <= 1e-6, "{prefix}: padded batch max abs diff {d}");
}

#[test]
fn v2_p64() {
    check_setting("p64", &FIXTURE_IMAGES, Some(64));
}

#[test]
fn v2_p128() {
    check_setting("p128", &FIXTURE_IMAGES, Some(128));
}

#[test]
fn v2_dynamic_bucket() {
    check_setting("dyn", &FIXTURE_IMAGES[..1], None);
}
