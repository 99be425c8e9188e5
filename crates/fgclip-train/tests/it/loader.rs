//! The loader: seeded epoch orders, resume at (epoch, step), rank shards, monolingual bilingual batches,
//! prefetching equal to on-demand collation, image failures under Skip / Reject.

use crate::common;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use fgclip::hub::ModelFiles;
use fgclip_train::batch::{Batch, Collator};
use fgclip_train::data::{BoxInfo, Dataset, ImageRoots, Lang, Policy, Record};
use fgclip_train::loader::{epoch_order, global_batches_per_epoch, Loader, LoaderConfig, Sampler};
use fgclip_train::trainer::BatchSource;

// ------------------------------------------------------------------ orders (no fixtures needed)

fn langs(en: usize, cn: usize) -> Vec<Lang> {
    // Interleaved, so "consecutive records of one language" is not the same as consecutive indices.
    let mut v = Vec::new();
    let (mut e, mut c) = (0, 0);
    while e < en || c < cn {
        if e < en {
            v.push(Lang::En);
            e += 1;
        }
        if c < cn && (c * 3 < e * 2 || e == en) {
            v.push(Lang::Cn);
            c += 1;
        }
    }
    v
}

#[test]
fn random_order_is_seeded_and_complete() {
    let l = vec![Lang::En; 103];
    let g = 8;
    assert_eq!(global_batches_per_epoch(&l, Sampler::Random, g), 12);
    let a = epoch_order(&l, Sampler::Random, g, 7, 0);
    assert_eq!(a, epoch_order(&l, Sampler::Random, g, 7, 0), "same (seed, epoch) → same order");
    assert_ne!(a, epoch_order(&l, Sampler::Random, g, 7, 1), "epochs differ");
    assert_ne!(a, epoch_order(&l, Sampler::Random, g, 8, 0), "seeds differ");
    assert_eq!(a.len(), 96, "incomplete last global batch dropped");
    assert_eq!(a.iter().collect::<HashSet<_>>().len(), 96, "no index twice");
    assert!(a.iter().all(|&i| i < 103));
    // Every record is seen across epochs (the dropped tail changes with the permutation).
    let seen: HashSet<usize> = (0..10).flat_map(|e| epoch_order(&l, Sampler::Random, g, 7, e)).collect();
    assert_eq!(seen.len(), 103);
}

#[test]
fn bilingual_order_is_monolingual_megabatches() {
    let l = langs(23, 17);
    let g = 4;
    let en: Vec<usize> = (0..l.len()).filter(|&i| l[i] == Lang::En).collect();
    let cn: Vec<usize> = (0..l.len()).filter(|&i| l[i] == Lang::Cn).collect();
    assert_eq!((en.len(), cn.len()), (23, 17));
    assert_eq!(global_batches_per_epoch(&l, Sampler::Bilingual, g), 5 + 4);
    let mut orders = HashSet::new();
    for epoch in 0..6 {
        let o = epoch_order(&l, Sampler::Bilingual, g, 3, epoch);
        assert_eq!(o.len(), 9 * g);
        let mut megas: Vec<Vec<usize>> = o.chunks(g).map(<[usize]>::to_vec).collect();
        for m in &megas {
            let lang = l[m[0]];
            assert!(m.iter().all(|&i| l[i] == lang), "mega-batch {m:?} mixes languages");
        }
        // The official sampler does not shuffle within a language: mega-batches are the consecutive W·B-chunks
        // of each language's records in dataset order; only their order changes.
        megas.sort();
        let mut want: Vec<Vec<usize>> = en.chunks_exact(g).chain(cn.chunks_exact(g)).map(<[usize]>::to_vec).collect();
        want.sort();
        assert_eq!(megas, want);
        orders.insert(o);
    }
    assert!(orders.len() > 1, "the mega-batch order must change between epochs");
    // One language only is accepted.
    assert_eq!(epoch_order(&[Lang::En; 9], Sampler::Bilingual, 4, 0, 0).len(), 8);
}

// ------------------------------------------------------------------ loaders (fixture tokenizer + config)

fn fgclip2_collator() -> Option<Arc<Collator>> {
    let fx = common::fixtures_dir()?;
    let files = ModelFiles::from_dir(fx.join("fgclip2/model")).ok()?;
    Some(Arc::new(Collator::from_files(&files).unwrap()))
}

fn boxed(k: usize) -> BoxInfo {
    let mut negs = fgclip_train::data::NegMap::new();
    for n in 0..10 {
        negs.insert(format!("n{n}"), format!("Neg {n} of {k}"));
    }
    BoxInfo {
        bbox: vec![0.1, 0.1 + 0.01 * k as f32, 0.6, 0.7],
        short_expr: format!("Short {k}"),
        long_expr: format!("a much longer caption number {k}"),
        flag_short_neg: (k % 2) as u8,
        short_expr_negs: negs,
    }
}

/// `n_en` EN + `n_cn` CN records (interleaved) with small distinct PNGs.
fn dataset(dir: &Path, n_en: usize, n_cn: usize) -> Arc<Dataset> {
    let (en_root, cn_root) = (dir.join("en"), dir.join("cn"));
    std::fs::create_dir_all(&en_root).unwrap();
    std::fs::create_dir_all(&cn_root).unwrap();
    let mut records = Vec::new();
    for (i, lang) in langs(n_en, n_cn).into_iter().enumerate() {
        let (w, h) = (130 + 7 * (i as u32 % 9), 140 + 11 * (i as u32 % 5));
        let img =
            image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x + i as u32) as u8, (y * 2) as u8, (i * 13) as u8]));
        let name = format!("{i}.png");
        let root = if lang == Lang::En { &en_root } else { &cn_root };
        img.save(root.join(&name)).unwrap();
        records.push(Record {
            f_path: name,
            caption: format!("Long caption of Record {i}"),
            short_caption: format!("Thing {i}"),
            bbox_info: if lang == Lang::En { (0..(i % 6)).map(boxed).collect() } else { vec![] },
            is_cn: (lang == Lang::Cn).then_some(serde_json::Value::Bool(true)),
        });
    }
    let roots = ImageRoots { en: en_root, cn: Some(cn_root), f_path_remove: None };
    Arc::new(Dataset::from_records(records, roots).unwrap())
}

fn loader(data: &Arc<Dataset>, c: &Arc<Collator>, cfg: LoaderConfig) -> Loader {
    Loader::new(data.clone(), c.clone(), cfg, Device::Cpu).unwrap()
}

fn cfg(b: usize, w: usize, r: usize, sampler: Sampler, prefetch: usize) -> LoaderConfig {
    LoaderConfig { batch_size: b, world_size: w, rank: r, seed: 11, sampler, prefetch, policy: Policy::Reject }
}

fn v2(t: &Tensor) -> Vec<Vec<u32>> {
    t.to_vec2::<u32>().unwrap()
}

/// Exact equality of everything in two batches.
fn assert_same(a: &Batch, b: &Batch, what: &str) {
    assert_eq!(v2(&a.text_short), v2(&b.text_short), "{what}: text_short");
    assert_eq!(v2(a.text_long.as_ref().unwrap()), v2(b.text_long.as_ref().unwrap()), "{what}: text_long");
    assert_eq!(v2(&a.box_texts), v2(&b.box_texts), "{what}: box_texts");
    assert_eq!(v2(&a.hard_texts), v2(&b.hard_texts), "{what}: hard_texts");
    assert_eq!(
        (&a.box_infos, &a.box_nums, &a.hard_infos, &a.hard_nums),
        (&b.box_infos, &b.box_nums, &b.hard_infos, &b.hard_nums),
        "{what}: boxes"
    );
    assert_eq!(a.is_cn, b.is_cn);
    let (pa, pb) = (&a.pixels, &b.pixels);
    assert!(pa.valid.is_some() && pb.valid.is_some(), "{what}: expected NaFlex pixels");
    assert_eq!(pa.grids, pb.grids, "{what}: grids");
    assert_eq!(common::max_abs_diff(&pa.pixel_values, &pb.pixel_values), 0.0, "{what}: pixels");
}

fn epoch(l: &mut Loader, e: usize, skip: usize) -> Vec<Batch> {
    l.start_epoch(e, skip).unwrap();
    let mut out = Vec::new();
    while let Some(b) = l.next_batch().unwrap() {
        out.push(b);
    }
    assert!(l.next_batch().unwrap().is_none(), "stays at the end");
    out
}

#[test]
fn same_seed_same_batches_and_resume() {
    let Some(c) = fgclip2_collator() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 14, 0);
    // Prefetching (background thread) and on-demand collation give the same batches.
    let mut a = loader(&data, &c, cfg(3, 1, 0, Sampler::Random, 3));
    let mut b = loader(&data, &c, cfg(3, 1, 0, Sampler::Random, 0));
    assert_eq!(a.batches_per_epoch(), 4);
    let (a1, b1) = (epoch(&mut a, 1, 0), epoch(&mut b, 1, 0));
    assert_eq!(a1.len(), 4);
    for (k, (x, y)) in a1.iter().zip(&b1).enumerate() {
        assert_same(x, y, &format!("epoch 1 batch {k}"));
    }
    // Epochs differ.
    let a2 = epoch(&mut a, 2, 0);
    assert_ne!(v2(&a1[0].text_short), v2(&a2[0].text_short));
    // A fresh loader resumed at (1, 2) continues with exactly batches 2 and 3 of epoch 1 (incl. the random box
    // captions), then epoch 2 as before.
    let mut r = loader(&data, &c, cfg(3, 1, 0, Sampler::Random, 2));
    assert_eq!(r.position(), (0, 0));
    let rest = epoch(&mut r, 1, 2);
    assert_eq!(rest.len(), 2);
    assert_same(&rest[0], &a1[2], "resumed step 2");
    assert_same(&rest[1], &a1[3], "resumed step 3");
    assert_eq!(r.position(), (1, 4));
    assert_same(&epoch(&mut r, 2, 0)[0], &a2[0], "epoch after resume");
    // collate_step is the same function of (epoch, step).
    let (s, _) = r.collate_step(1, 3).unwrap();
    assert_same(&s, &a1[3], "collate_step");
    // Resuming past the epoch's end is an error; at its end is an empty remainder.
    assert!(r.start_epoch(1, 5).unwrap_err().to_string().contains("4 batches"));
    assert!(epoch(&mut r, 1, 4).is_empty());
    // Dropping a loader with batches in flight does not hang.
    let mut d = loader(&data, &c, cfg(3, 1, 0, Sampler::Random, 3));
    d.next_batch().unwrap().unwrap();
    drop(d);
}

#[test]
fn rank_shards_partition_the_global_batch() {
    let Some(c) = fgclip2_collator() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 17, 0);
    let (w, b) = (3, 2);
    let mut whole = loader(&data, &c, cfg(w * b, 1, 0, Sampler::Random, 0));
    let mut ranks: Vec<Loader> = (0..w).map(|r| loader(&data, &c, cfg(b, w, r, Sampler::Random, 2))).collect();
    assert_eq!(whole.batches_per_epoch(), 2);
    let per_rank: Vec<Vec<Batch>> = ranks.iter_mut().map(|l| epoch(l, 0, 0)).collect();
    for step in 0..2 {
        let global = whole.global_indices(0, step);
        assert_eq!(global.len(), w * b);
        let mut union = Vec::new();
        for (r, l) in ranks.iter_mut().enumerate() {
            assert_eq!(l.global_indices(0, step), global, "every rank sees the same global batch");
            let mine = l.rank_indices(0, step);
            assert_eq!(mine, global[r * b..(r + 1) * b], "rank {r} takes its B-slice");
            union.extend(mine);
        }
        assert_eq!(union, global, "the shards partition the global batch");
        // The collated rows are those of the slice (texts do not depend on the rest of the batch).
        let (g, _) = whole.collate_step(0, step).unwrap();
        let g_short = v2(&g.text_short);
        for (r, batches) in per_rank.iter().enumerate() {
            assert_eq!(v2(&batches[step].text_short), g_short[r * b..(r + 1) * b], "rank {r} step {step}");
        }
    }
    // Each rank's batches (incl. its box-caption stream) are reproducible.
    let again = epoch(&mut ranks[1], 0, 0);
    assert_same(&again[1], &per_rank[1][1], "rank 1 replay");
    assert!(
        Loader::new(data.clone(), c.clone(), cfg(2, 2, 2, Sampler::Random, 0), Device::Cpu).is_err(),
        "rank ≥ world"
    );
}

#[test]
fn bilingual_batches_are_monolingual() {
    let Some(c) = fgclip2_collator() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 13, 9);
    let mut l = loader(&data, &c, cfg(2, 2, 1, Sampler::Bilingual, 2));
    assert_eq!(l.batches_per_epoch(), 3 + 2);
    let batches = epoch(&mut l, 0, 0);
    let mut kinds = HashSet::new();
    for (step, bt) in batches.iter().enumerate() {
        let idx = l.rank_indices(0, step);
        let lang = data.items[idx[0]].lang();
        assert!(idx.iter().all(|&i| data.items[i].lang() == lang), "step {step} mixes languages");
        assert_eq!(bt.is_cn, lang == Lang::Cn);
        if bt.is_cn {
            assert!(bt.box_nums.iter().all(|&n| n == 0) && bt.hard_texts.dims()[0] == 0);
        }
        kinds.insert(bt.is_cn);
    }
    // The trainer's view: the same thing through the BatchSource trait.
    assert_eq!(BatchSource::batches_per_epoch(&l), 5);
    assert_eq!(kinds.len(), 2, "both languages appear in an epoch");
}

#[test]
fn unreadable_images_skip_or_reject() {
    let Some(c) = fgclip2_collator() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 4, 0);
    std::fs::write(dir.path().join("en/2.png"), b"not a png").unwrap();
    let mut skip = loader(&data, &c, LoaderConfig { policy: Policy::Skip, ..cfg(4, 1, 0, Sampler::Random, 2) });
    assert_eq!(epoch(&mut skip, 0, 0).len(), 1);
    let issues = skip.take_issues();
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].message.contains("2.png") && issues[0].message.contains("black image"), "{}", issues[0]);
    assert_eq!(issues[0].line, 3, "record index 2 → line 3 of <memory>");
    assert!(skip.take_issues().is_empty());
    let mut reject = loader(&data, &c, cfg(4, 1, 0, Sampler::Random, 2));
    reject.start_epoch(0, 0).unwrap();
    let err = reject.next_batch().unwrap_err().to_string();
    assert!(err.contains("<memory>:3") && err.contains("2.png"), "{err}");
}
