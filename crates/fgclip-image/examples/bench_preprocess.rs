//! Single-thread throughput of decode + preprocess for one image file (default: the fixture cat photo).
//!
//!     cargo run --release -p fgclip-image --example bench_preprocess [-- IMAGE [ITERATIONS]]
//!
//! Prints images/s for: decode only; decode + FG-CLIP v1 224 squash; decode + NaFlex at 256 and at the dynamic
//! bucket (1024 for 640x480).

use std::path::PathBuf;
use std::time::Instant;

use fgclip_image::{clip, load_rgb, naflex};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().map(PathBuf::from).unwrap_or_else(|| {
        let root = std::env::var_os("FGCLIP_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
        root.join("images/cat_dfclor.jpg")
    });
    let iters: usize = args.next().map(|s| s.parse().expect("ITERATIONS")).unwrap_or(200);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let img = load_rgb(&path).unwrap();
    println!("{} ({}x{}), {iters} iterations, 1 thread", path.display(), img.width, img.height);
    let name = path.display().to_string();

    let bench = |label: &str, f: &dyn Fn() -> usize| {
        let mut sink = f(); // warm-up
        let t = Instant::now();
        for _ in 0..iters {
            sink = sink.wrapping_add(f());
        }
        let dt = t.elapsed().as_secs_f64();
        println!(
            "{label:<40} {:8.2} ms/image  {:8.1} images/s  (sink {})",
            dt * 1e3 / iters as f64,
            iters as f64 / dt,
            sink % 10
        );
    };
    let bucket = naflex::bucket_max_patches(img.height, img.width);
    bench("decode", &|| fgclip_image::decode_rgb(&bytes, &name).unwrap().data.len());
    bench("v1 resize+normalize 224 (no decode)", &|| {
        clip::preprocess(&img, 224, clip::OPENAI_MEAN, clip::OPENAI_STD).len()
    });
    bench("decode + v1 224", &|| {
        let im = fgclip_image::decode_rgb(&bytes, &name).unwrap();
        clip::preprocess(&im, 224, clip::OPENAI_MEAN, clip::OPENAI_STD).len()
    });
    bench("decode + v1 336", &|| {
        let im = fgclip_image::decode_rgb(&bytes, &name).unwrap();
        clip::preprocess(&im, 336, clip::OPENAI_MEAN, clip::OPENAI_STD).len()
    });
    bench("decode + naflex 256", &|| {
        let im = fgclip_image::decode_rgb(&bytes, &name).unwrap();
        naflex::preprocess(&im, 16, 256, naflex::FGCLIP2_MEAN, naflex::FGCLIP2_STD).pixel_values.len()
    });
    bench(&format!("naflex {bucket} (no decode)"), &|| {
        naflex::preprocess(&img, 16, bucket, naflex::FGCLIP2_MEAN, naflex::FGCLIP2_STD).pixel_values.len()
    });
    bench(&format!("decode + naflex {bucket} (dynamic bucket)"), &|| {
        let im = fgclip_image::decode_rgb(&bytes, &name).unwrap();
        naflex::preprocess(&im, 16, bucket, naflex::FGCLIP2_MEAN, naflex::FGCLIP2_STD).pixel_values.len()
    });
}
