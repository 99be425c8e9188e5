//! Test support: the tiny fixture models, synthetic photos (PNG / JPEG, optionally with an EXIF orientation)
//! and shortcuts around `fgclip_search::index`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use fgclip::{LoadOptions, Model};
use fgclip_search::store::{Kind, VectorId};
use fgclip_search::{IndexOptions, NoProgress, SqliteStore, Store, Summary};

/// (source, model) of a tiny fixture checkpoint: `fgclip2` or `fgclip_v1`.
pub fn model(family: &str) -> Option<(String, Model)> {
    let dir = fgclip_testkit::fixture_file(&format!("{family}/model/config.json"))?.parent()?.to_path_buf();
    let src = dir.display().to_string();
    let m = Model::load(&src, &LoadOptions::default()).expect("loading the fixture model");
    Some((src, m))
}

/// A deterministic picture: a background and a few rectangles whose colours and places depend on `seed`.
pub fn picture(w: u32, h: u32, seed: u32) -> image::RgbImage {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s
    };
    let bg = [(next() % 200) as u8, (next() % 200) as u8, (next() % 200) as u8];
    let mut img = image::RgbImage::from_pixel(w, h, image::Rgb(bg));
    for _ in 0..3 {
        let (x0, y0) = (next() % w, next() % h);
        let (rw, rh) = (1 + next() % (w / 2).max(1), 1 + next() % (h / 2).max(1));
        let c = image::Rgb([(next() % 256) as u8, (next() % 256) as u8, (next() % 256) as u8]);
        for y in y0..(y0 + rh).min(h) {
            for x in x0..(x0 + rw).min(w) {
                img.put_pixel(x, y, c);
            }
        }
    }
    img
}

pub fn write_png(path: &Path, w: u32, h: u32, seed: u32) {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    picture(w, h, seed).save(path).unwrap();
}

/// A baseline JPEG of `img`, with an EXIF APP1 segment carrying `orientation` when given.
pub fn jpeg_bytes(img: &image::RgbImage, orientation: Option<u16>) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95).encode_image(img).unwrap();
    let Some(o) = orientation else { return out };
    // TIFF header (little-endian), one IFD entry: tag 0x0112 (Orientation), SHORT, count 1.
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&(o as u32).to_le_bytes());
    tiff.extend_from_slice(&0u32.to_le_bytes());
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
    app1.extend_from_slice(b"Exif\0\0");
    app1.extend_from_slice(&tiff);
    let mut with = out[..2].to_vec();
    with.extend_from_slice(&app1);
    with.extend_from_slice(&out[2..]);
    with
}

/// `n` PNGs `img_000.png`… of assorted sizes under `dir`.
pub fn photo_folder(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("img_{i:03}.png"));
            write_png(&p, 40 + (i as u32 * 13) % 90, 36 + (i as u32 * 29) % 80, i as u32);
            p
        })
        .collect()
}

pub fn index(model: &(String, Model), db: &Path, roots: &[PathBuf], opts: &IndexOptions) -> Summary {
    try_index(model, db, roots, opts).unwrap_or_else(|e| panic!("indexing failed: {e}"))
}

pub fn try_index(
    model: &(String, Model),
    db: &Path,
    roots: &[PathBuf],
    opts: &IndexOptions,
) -> fgclip_search::Result<Summary> {
    let mut store = SqliteStore::open_for_write(db)?;
    fgclip_search::index(&model.1, &model.0, &mut store, roots, opts, &NoProgress)
}

/// Every stored vector of `kind`, with its image's path, sorted (for comparing two indexes).
pub fn dump(db: &Path, kind: Kind) -> Vec<(PathBuf, Vec<u8>)> {
    let store = SqliteStore::open_for_read(db).unwrap();
    let mut raw: Vec<(VectorId, Vec<u8>)> = Vec::new();
    store.for_each_vector(kind, &mut |id, v| raw.push((id, v.to_vec()))).unwrap();
    let files = store.files().unwrap();
    let mut out: Vec<(PathBuf, Vec<u8>)> =
        raw.into_iter().map(|(id, v)| (files.iter().find(|f| f.id == id.image_id).unwrap().path.clone(), v)).collect();
    out.sort();
    out
}

pub fn paths(db: &Path) -> Vec<PathBuf> {
    let store = SqliteStore::open_for_read(db).unwrap();
    let mut p: Vec<PathBuf> = store.files().unwrap().into_iter().map(|f| f.path).collect();
    p.sort();
    p
}

/// Sets a file's mtime (to force "changed" without waiting for the clock).
pub fn set_mtime(path: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).unwrap();
}
