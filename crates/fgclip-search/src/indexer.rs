//! `fgclip index`: bring a store up to date with folders of photos.
//!
//! The run is incremental. Files whose size and mtime match the store are not opened. Every other file is
//! hashed (BLAKE3), and then:
//! * a known path with its old content is only touched;
//! * a known content whose old path is gone counts as moved, and keeps its vectors;
//! * a known content whose old path still exists is a copy, and its vectors are copied;
//! * anything else is decoded, turned upright (EXIF), preprocessed and encoded.
//!
//! Files of the store under the given folders that were not found again are swept at the end. Folders that
//! could not be read are left out of the sweep, so an unreadable or unmounted folder loses nothing.
//!
//! A worker thread reads, hashes, decodes and preprocesses the next chunks while the model encodes the current
//! one, through a bounded channel. Each chunk is written in one transaction, so a killed run resumes where it
//! stopped: no image is lost, none is duplicated, and there are no half-written images.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use fgclip::fgclip_image::{self, PixelBatch};
use fgclip::{Model, PatchBudget, PreparedImages, TextWalk};
use rayon::prelude::*;
use serde::Serialize;

use crate::identity::{identify, ModelIdentity};
use crate::regions::{self, RegionConfig};
use crate::scan::{self, FoundFile, ScanOptions};
use crate::store::{Change, FileRow, IndexInfo, Store, Vectors, SCHEMA_VERSION};
use crate::vectors::{normalized, to_f16_bytes};
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct IndexOptions {
    pub scan: ScanOptions,
    /// Images per model batch, and per transaction.
    pub batch: usize,
    /// Files with more pixels than this (in millions) are skipped, read from the header before decoding.
    pub max_megapixels: f64,
    /// Region candidates for a new index; an existing index keeps its own (change them with `reindex`).
    pub regions: Option<RegionConfig>,
    /// Drop every vector and start over (needed to change the model or the region settings).
    pub reindex: bool,
    /// FG-CLIP 2's patch budget.
    pub budget: PatchBudget,
    /// Decode every JPEG in full, as `features` does, for a new index (see `IndexInfo::reduced_decode`; an
    /// existing index keeps its own setting).
    pub full_decode: bool,
    /// `Some((i, n))`: index only the files whose path hash falls in shard `i` of `n` (0-based), so `n`
    /// machines can fill one shared store; the sweep is limited to the same shard.
    pub shard: Option<(u32, u32)>,
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self {
            scan: ScanOptions::default(),
            batch: 16,
            max_megapixels: 100.0,
            regions: None,
            reindex: false,
            budget: PatchBudget::Dynamic,
            full_decode: false,
            shard: None,
        }
    }
}

/// A file that was skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub path: String,
    pub reason: String,
}

/// What a run did (the `--json` output of `fgclip index`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub added: u64,
    pub updated: u64,
    pub moved: u64,
    pub removed: u64,
    pub unchanged: u64,
    pub failed: u64,
    pub failures: Vec<Failure>,
    /// Images and regions in the store after the run.
    pub images: u64,
    pub regions: u64,
    /// Stored vector bytes per image (its embedding and its regions'), on average.
    pub bytes_per_image: f64,
    /// Images encoded by the model in this run, and their rate (decoding overlapped).
    pub encoded: u64,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// Where the indexer reports progress (the CLI draws a bar; tests pass [`NoProgress`]).
pub trait Progress: Sync {
    fn start(&self, _files: u64) {}
    fn advance(&self, _files: u64) {}
    fn finish(&self) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

/// The index settings for `model`, for a new store.
pub fn index_info(model: &Model, identity: ModelIdentity, regions: RegionConfig, reduced_decode: bool) -> IndexInfo {
    IndexInfo {
        schema_version: SCHEMA_VERSION,
        model: identity,
        family: model.family().name().to_string(),
        embed_dim: model.embed_dim(),
        image_walk: walk_name(TextWalk::Short).into(),
        region_walk: walk_name(model.region_walk()).into(),
        precision: model.precision().name().into(),
        regions,
        encoding: "f16".into(),
        exif_orientation: true,
        reduced_decode,
    }
}

pub fn walk_name(w: TextWalk) -> &'static str {
    match w {
        TextWalk::Short => "short",
        TextWalk::Long => "long",
        TextWalk::Box => "box",
    }
}

/// Checks that `store` was made by this model (or is new), and settles the index settings. With `reindex`
/// the store is emptied and takes the new settings.
pub fn prepare_store(model: &Model, source: &str, store: &mut dyn Store, opts: &IndexOptions) -> Result<IndexInfo> {
    let existing = store.info()?;
    let identity = identify(source, &model.files, existing.as_ref().map(|i| &i.model))?;
    let regions = match (&opts.regions, &existing) {
        (Some(r), _) => r.clone(),
        (None, Some(i)) if !opts.reindex => i.regions.clone(),
        (None, _) => RegionConfig::default(),
    };
    regions.validate().map_err(Error::Input)?;
    let reduced = match &existing {
        Some(i) if !opts.reindex => i.reduced_decode,
        _ => !opts.full_decode,
    };
    let info = index_info(model, identity, regions, reduced);
    match existing {
        Some(old) if !opts.reindex => {
            if old.model.fingerprint != info.model.fingerprint || old.embed_dim != info.embed_dim {
                return Err(Error::Mismatch {
                    db: store.describe(),
                    msg: format!(
                        "it was made with the model {} (fingerprint {}), not with {} (fingerprint {}); \
                         pass --reindex to rebuild it with this model (its vectors are replaced)",
                        old.model.source,
                        &old.model.fingerprint[..12],
                        info.model.source,
                        &info.model.fingerprint[..12]
                    ),
                });
            }
            if opts.full_decode && old.reduced_decode {
                return Err(Error::Mismatch {
                    db: store.describe(),
                    msg: "it decodes large JPEGs at a reduced size; pass --reindex with --full-decode to rebuild it \
                          from full decodes"
                        .into(),
                });
            }
            if old.regions != info.regions {
                return Err(Error::Mismatch {
                    db: store.describe(),
                    msg: "its region settings differ from the ones asked for; pass --reindex to rebuild it".into(),
                });
            }
            // Same model: keep the stored settings, refresh the model's location and file stamps.
            let info = IndexInfo { model: info.model, ..old };
            store.set_info(&info, false)?;
            Ok(info)
        }
        _ => {
            store.set_info(&info, true)?;
            Ok(info)
        }
    }
}

/// One unit of work sent from the decoding thread to the model.
enum Item {
    Embed { file: FoundFile, hash: [u8; 32], replace: Option<i64>, pixels: PixelBatch },
    Ready(Change),
    Failed(Failure),
}

fn in_shard(path: &Path, shard: Option<(u32, u32)>) -> bool {
    match shard {
        None => true,
        Some((i, n)) => {
            let h = blake3::hash(path.as_os_str().as_encoded_bytes());
            let v = u32::from_le_bytes(h.as_bytes()[..4].try_into().expect("4 bytes"));
            v % n == i
        }
    }
}

/// Runs one indexing pass of `roots` into `store` (see the module docs).
pub fn index(
    model: &Model,
    source: &str,
    store: &mut dyn Store,
    roots: &[PathBuf],
    opts: &IndexOptions,
    progress: &dyn Progress,
) -> Result<Summary> {
    if opts.batch == 0 {
        return Err(Error::input("--batch must be at least 1"));
    }
    if !(opts.max_megapixels.is_finite() && opts.max_megapixels > 0.0) {
        return Err(Error::input("--max-megapixels must be a positive number"));
    }
    if let Some((i, n)) = opts.shard {
        if n == 0 || i >= n {
            return Err(Error::input(format!("--shard {i}/{n}: expected i/N with 0 <= i < N")));
        }
    }
    let started = Instant::now();
    let info = prepare_store(model, source, store, opts)?;
    let scan = scan::scan(roots, &opts.scan)?;
    let mut summary = Summary::default();
    for p in &scan.problems {
        summary.failures.push(Failure { path: p.path.display().to_string(), reason: p.reason.clone() });
    }

    let rows = store.files()?;
    let by_path: HashMap<&Path, &FileRow> = rows.iter().map(|r| (r.path.as_path(), r)).collect();
    let found: HashSet<&Path> = scan.files.iter().map(|f| f.path.as_path()).collect();
    let mut todo: Vec<FoundFile> = Vec::new();
    for f in scan.files.iter().filter(|f| in_shard(&f.path, opts.shard)) {
        match by_path.get(f.path.as_path()) {
            Some(r) if r.size == f.size && r.mtime_ns == f.mtime_ns => summary.unchanged += 1,
            _ => todo.push(f.clone()),
        }
    }
    // Rows whose file is gone: candidates for moves, then for the sweep.
    let gone: HashSet<i64> = rows
        .iter()
        .filter(|r| !found.contains(r.path.as_path()) && std::fs::symlink_metadata(&r.path).is_err())
        .map(|r| r.id)
        .collect();

    progress.start(todo.len() as u64);
    let mut encoded = 0u64;
    let encode_started = Instant::now();
    // Rows taken over by moves (decided on the decoding thread): kept out of the sweep.
    let claimed: HashSet<i64> = std::thread::scope(|s| -> Result<HashSet<i64>> {
        let (tx, rx) = sync_channel::<Vec<Item>>(2);
        let worker = {
            let todo = &todo;
            let rows = &rows;
            let by_path = &by_path;
            let gone = &gone;
            let processor = &model.processor;
            let max_pixels = opts.max_megapixels * 1e6;
            let budget = opts.budget;
            let reduced = info.reduced_decode;
            let batch = opts.batch;
            s.spawn(move || -> HashSet<i64> {
                let mut planner = Planner::new(rows, by_path, gone);
                for chunk in todo.chunks(batch) {
                    let items = planner.chunk(chunk, processor, budget, max_pixels, reduced);
                    if tx.send(items).is_err() {
                        break; // the model side stopped (an error): stop reading.
                    }
                }
                planner.claimed
            })
        };
        let result = (|| -> Result<()> {
            for items in rx.iter() {
                let n = items.len() as u64;
                let (changes, fails, k) = encode_chunk(model, &info.regions, items)?;
                store.apply(&changes)?;
                encoded += k;
                for c in &changes {
                    match c {
                        Change::Add { .. } | Change::Copy { .. } => summary.added += 1,
                        Change::Replace { .. } => summary.updated += 1,
                        Change::Move { .. } => summary.moved += 1,
                        Change::Touch { .. } => summary.unchanged += 1,
                        Change::Remove { .. } => summary.removed += 1,
                    }
                }
                summary.failures.extend(fails);
                progress.advance(n);
            }
            Ok(())
        })();
        drop(rx);
        let claimed = worker.join().map_err(|_| Error::input("the decoding thread panicked"))?;
        result.map(|()| claimed)
    })?;
    progress.finish();
    let encode_secs = encode_started.elapsed().as_secs_f64();

    // The sweep: files under the roots (and in this shard) that are gone and were not moved, except under
    // folders that could not be read.
    let blocked: Vec<&Path> = scan.problems.iter().map(|p| p.path.as_path()).collect();
    let removes: Vec<Change> = rows
        .iter()
        .filter(|r| gone.contains(&r.id) && !claimed.contains(&r.id))
        .filter(|r| scan.roots.iter().any(|root| r.path.starts_with(root)))
        .filter(|r| !blocked.iter().any(|b| r.path.starts_with(b)))
        .filter(|r| in_shard(&r.path, opts.shard))
        .map(|r| Change::Remove { id: r.id })
        .collect();
    summary.removed = removes.len() as u64;
    store.apply(&removes)?;
    store.after_index()?;

    let stats = store.stats()?;
    summary.failed = summary.failures.len() as u64;
    summary.images = stats.images;
    summary.regions = stats.regions;
    summary.bytes_per_image = if stats.images > 0 { stats.vector_bytes as f64 / stats.images as f64 } else { 0.0 };
    summary.encoded = encoded;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.images_per_second = if encode_secs > 0.0 { encoded as f64 / encode_secs } else { 0.0 };
    Ok(summary)
}

/// Decides, file by file, what each changed file is (touched, moved, copied, or to encode) and prepares the
/// ones to encode. Runs on the decoding thread.
struct Planner<'a> {
    by_path: &'a HashMap<&'a Path, &'a FileRow>,
    by_hash: HashMap<[u8; 32], Vec<&'a FileRow>>,
    gone: &'a HashSet<i64>,
    /// Rows taken over by a move in this run (each moves once).
    claimed: HashSet<i64>,
}

/// A file to decode: its place in the chunk, its bytes and hash, and the row it replaces.
struct ToDecode {
    k: usize,
    bytes: Vec<u8>,
    hash: [u8; 32],
    replace: Option<i64>,
}

impl<'a> Planner<'a> {
    fn new(rows: &'a [FileRow], by_path: &'a HashMap<&'a Path, &'a FileRow>, gone: &'a HashSet<i64>) -> Self {
        let mut by_hash: HashMap<[u8; 32], Vec<&FileRow>> = HashMap::new();
        for r in rows {
            by_hash.entry(r.hash).or_default().push(r);
        }
        Self { by_path, by_hash, gone, claimed: HashSet::new() }
    }

    fn chunk(
        &mut self,
        chunk: &[FoundFile],
        processor: &fgclip_image::ImageProcessor,
        budget: PatchBudget,
        max_pixels: f64,
        reduced: bool,
    ) -> Vec<Item> {
        let read: Vec<ReadResult> = chunk.par_iter().map(|f| read_and_hash(&f.path)).collect();
        let mut items: Vec<Option<Item>> = Vec::with_capacity(chunk.len());
        let mut decode: Vec<ToDecode> = Vec::new();
        for (k, (f, r)) in chunk.iter().zip(read).enumerate() {
            let (bytes, hash) = match r {
                Ok(x) => x,
                Err(fail) => {
                    items.push(Some(Item::Failed(fail)));
                    continue;
                }
            };
            if let Some(row) = self.by_path.get(f.path.as_path()) {
                if row.hash == hash {
                    items.push(Some(Item::Ready(Change::Touch { id: row.id, file: f.clone() })));
                } else {
                    items.push(None);
                    decode.push(ToDecode { k, bytes, hash, replace: Some(row.id) });
                }
                continue;
            }
            let same = self.by_hash.get(&hash).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(m) = same.iter().find(|r| self.gone.contains(&r.id) && !self.claimed.contains(&r.id)) {
                self.claimed.insert(m.id);
                items.push(Some(Item::Ready(Change::Move { id: m.id, file: f.clone() })));
            } else if !same.is_empty() {
                items.push(Some(Item::Ready(Change::Copy { file: f.clone(), hash })));
            } else {
                items.push(None);
                decode.push(ToDecode { k, bytes, hash, replace: None });
            }
        }
        let decoded: Vec<(usize, Item)> = decode
            .into_par_iter()
            .map(|d| {
                let f = &chunk[d.k];
                let item = match prepare(&d.bytes, &f.path, processor, budget, max_pixels, reduced) {
                    Ok(pixels) => Item::Embed { file: f.clone(), hash: d.hash, replace: d.replace, pixels },
                    Err(reason) => Item::Failed(Failure { path: f.path.display().to_string(), reason }),
                };
                (d.k, item)
            })
            .collect();
        for (k, item) in decoded {
            items[k] = Some(item);
        }
        items.into_iter().flatten().collect()
    }
}

type ReadResult = std::result::Result<(Vec<u8>, [u8; 32]), Failure>;

fn read_and_hash(path: &Path) -> ReadResult {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure { path: path.display().to_string(), reason: format!("cannot read: {e}") })?;
    let hash = *blake3::hash(&bytes).as_bytes();
    Ok((bytes, hash))
}

/// Header check (size guard), decode, EXIF orientation, preprocessing: everything before the model. With
/// `reduced`, a large JPEG is decoded at a reduced size that keeps at least twice the tower's input on each side
/// (`fgclip_image::decode_rgb_at_least`); sizes and boxes still refer to the original picture.
fn prepare(
    bytes: &[u8],
    path: &Path,
    processor: &fgclip_image::ImageProcessor,
    budget: PatchBudget,
    max_pixels: f64,
    reduced: bool,
) -> std::result::Result<PixelBatch, String> {
    let name = path.display().to_string();
    let header = fgclip_image::read_header(bytes, &name).map_err(|e| strip_name(e.to_string(), &name))?;
    let (w, h) = (header.width as usize, header.height as usize);
    let pixels = w as f64 * h as f64;
    if pixels > max_pixels {
        return Err(format!(
            "{}x{} = {:.1} megapixels is above --max-megapixels {}",
            header.width,
            header.height,
            pixels / 1e6,
            max_pixels / 1e6
        ));
    }
    // EXIF orientations 5–8 turn the picture a quarter: the upright picture's sides are the stored ones swapped.
    let turned = matches!(header.orientation, 5..=8);
    let upright = if turned { (w, h) } else { (h, w) };
    let input = if reduced { processor.input_size(upright.0, upright.1, budget) } else { None };
    let img = match input {
        Some((th, tw)) => {
            let (min_w, min_h) = if turned { (2 * th, 2 * tw) } else { (2 * tw, 2 * th) };
            fgclip_image::decode_rgb_at_least(bytes, &name, min_w, min_h)
        }
        None => fgclip_image::decode_rgb(bytes, &name),
    }
    .map_err(|e| strip_name(e.to_string(), &name))?;
    let img = fgclip_image::apply_orientation(img, header.orientation);
    let original = if input.is_some() { upright } else { (img.height, img.width) };
    processor.process_reduced(&img, original, budget)
}

/// Failure reasons sit next to their path already; drop the repeated name from the decoder's message.
fn strip_name(msg: String, name: &str) -> String {
    msg.replace(&format!(": {name}"), "").replace(&format!("{name}: "), "").replace(name, "the file")
}

/// Encodes the images of one chunk in one model batch and turns the chunk into store changes (in file order).
fn encode_chunk(model: &Model, cfg: &RegionConfig, mut items: Vec<Item>) -> Result<(Vec<Change>, Vec<Failure>, u64)> {
    // The pixels move into the batch (no copy); the items keep what the changes need.
    let pixels: Vec<PixelBatch> = items
        .iter_mut()
        .filter_map(|it| match it {
            Item::Embed { pixels, .. } => Some(std::mem::take(pixels)),
            _ => None,
        })
        .collect();
    let mut vectors: Vec<std::result::Result<Vectors, String>> = Vec::new();
    let encoded = pixels.len() as u64;
    if !pixels.is_empty() {
        let batch = PixelBatch::concat(pixels).map_err(Error::Input)?;
        let prepared = PreparedImages::from_batch(batch, model.device(), model.dtype())?;
        vectors = embed(model, cfg, &prepared)?;
    }
    let mut vectors = vectors.into_iter();
    let (mut changes, mut fails) = (Vec::new(), Vec::new());
    for it in items {
        match it {
            Item::Ready(c) => changes.push(c),
            Item::Failed(f) => fails.push(f),
            Item::Embed { file, hash, replace, .. } => match vectors.next().expect("one result per image") {
                Ok(v) => changes.push(match replace {
                    Some(id) => Change::Replace { id, file, hash, vectors: v },
                    None => Change::Add { file, hash, vectors: v },
                }),
                Err(reason) => fails.push(Failure { path: file.path.display().to_string(), reason }),
            },
        }
    }
    Ok((changes, fails, encoded))
}

/// Global embeddings and region candidates of a prepared batch (unit vectors, f16). An image whose vectors are
/// not finite is reported, never stored.
pub fn embed(
    model: &Model,
    cfg: &RegionConfig,
    images: &PreparedImages,
) -> Result<Vec<std::result::Result<Vectors, String>>> {
    let (global, dense) = model.encode_images_with_dense(images)?;
    let global = global.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
    let boxes: Vec<Vec<[f32; 4]>> = dense
        .iter()
        .zip(&images.sizes)
        .map(|(d, &hw)| {
            if cfg.max_per_image == 0 {
                return Ok(vec![]);
            }
            let mut grid = regions::windows(d.rows, d.cols, cfg);
            if !cfg.segments.is_empty() {
                let feats = d.features.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
                let unit: Vec<Vec<f32>> = feats.iter().map(|f| normalized(f)).collect();
                for b in regions::segments(&unit, d.rows, d.cols, &cfg.segments) {
                    if !grid.contains(&b) {
                        grid.push(b);
                    }
                }
            }
            Ok(grid.iter().map(|b| regions::grid_to_pixels(b, d.rows, d.cols, hw)).collect())
        })
        .collect::<Result<_>>()?;
    let region_feats = model.regions_from_dense(&dense, &images.sizes, &boxes)?;
    let mut out = Vec::with_capacity(global.len());
    for (i, g) in global.iter().enumerate() {
        let (h, w) = images.sizes[i];
        let feats = region_feats[i].to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        let mean = dense[i].features.to_dtype(candle_core::DType::F32)?.mean(0)?.to_vec1::<f32>()?;
        if g.iter().chain(feats.iter().flatten()).chain(&mean).any(|x| !x.is_finite()) {
            out.push(Err("the model produced non-finite values for this image".to_string()));
            continue;
        }
        let unit: Vec<Vec<f32>> = feats.iter().map(|f| normalized(f)).collect();
        let keep = regions::select(&boxes[i], &unit, &normalized(&mean), cfg);
        out.push(Ok(Vectors {
            width: w as u32,
            height: h as u32,
            image: to_f16_bytes(&normalized(g)),
            regions: keep.into_iter().map(|k| (boxes[i][k], to_f16_bytes(&unit[k]))).collect(),
        }));
    }
    Ok(out)
}
