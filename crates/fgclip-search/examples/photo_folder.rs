//! A folder of photo-like JPEGs for the indexing-throughput benchmark (bench/index_throughput.sh): smooth
//! colour fields, a few shapes and sensor-like noise, so the files decode like camera JPEGs (entropy coded data of a
//! few bits per pixel) rather than like flat test images. Deterministic for a seed.
//!
//!   cargo run --release -p fgclip-search --example photo_folder -- DIR N WIDTHxHEIGHT [SEED]

use std::path::PathBuf;

use fgclip_search::rng::Rng;
use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageEncoder};

fn photo(w: u32, h: u32, r: &mut Rng) -> Vec<u8> {
    let corners: Vec<[f32; 3]> = (0..4).map(|_| [r.unit() * 255.0, r.unit() * 255.0, r.unit() * 255.0]).collect();
    // Ellipses: centre, radii, colour.
    let shapes: Vec<([f32; 4], [f32; 3])> = (0..6)
        .map(|_| {
            let geo = [
                r.unit() * w as f32,
                r.unit() * h as f32,
                (0.05 + 0.2 * r.unit()) * w as f32,
                (0.05 + 0.2 * r.unit()) * h as f32,
            ];
            (geo, [r.unit() * 255.0, r.unit() * 255.0, r.unit() * 255.0])
        })
        .collect();
    let mut px = vec![0u8; (w * h * 3) as usize];
    for y in 0..h {
        let fy = y as f32 / h as f32;
        for x in 0..w {
            let fx = x as f32 / w as f32;
            let mut c = [0f32; 3];
            for (k, v) in c.iter_mut().enumerate() {
                let top = corners[0][k] * (1.0 - fx) + corners[1][k] * fx;
                let bottom = corners[2][k] * (1.0 - fx) + corners[3][k] * fx;
                *v = top * (1.0 - fy) + bottom * fy;
            }
            for (g, col) in &shapes {
                let (dx, dy) = ((x as f32 - g[0]) / g[2], (y as f32 - g[1]) / g[3]);
                if dx * dx + dy * dy < 1.0 {
                    c = *col;
                }
            }
            let noise = (r.next_u64() >> 58) as f32 - 32.0; // ±32 in 64 steps, like a high-ISO sensor
            let i = ((y * w + x) * 3) as usize;
            for k in 0..3 {
                px[i + k] = (c[k] + noise * 0.5).clamp(0.0, 255.0) as u8;
            }
        }
    }
    px
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: photo_folder DIR N WIDTHxHEIGHT [SEED]".into());
    }
    let dir = PathBuf::from(&args[1]);
    let n: usize = args[2].parse()?;
    let (w, h) = args[3].split_once('x').ok_or("size: WIDTHxHEIGHT")?;
    let (w, h): (u32, u32) = (w.parse()?, h.parse()?);
    let seed: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1);
    std::fs::create_dir_all(&dir)?;
    let mut r = Rng::new(seed);
    let mut bytes = 0u64;
    for i in 0..n {
        let px = photo(w, h, &mut r);
        let path = dir.join(format!("photo_{i:05}.jpg"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        JpegEncoder::new_with_quality(&mut out, 90).write_image(&px, w, h, ExtendedColorType::Rgb8)?;
        drop(out);
        bytes += std::fs::metadata(&path)?.len();
    }
    println!(
        "{}",
        serde_json::json!({"dir": dir, "images": n, "width": w, "height": h, "bytes_per_image": bytes / n.max(1) as u64})
    );
    Ok(())
}
