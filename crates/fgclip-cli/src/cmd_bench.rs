//! `fgclip bench`: our side of the side-by-side CPU/GPU benchmark (bench/run.sh runs the PyTorch and ONNX
//! Runtime peers with the same workloads). Random weights at the released models' real sizes, so nothing is
//! downloaded. Prints items/s, latency, peak RSS and the FLOP rate, one JSON object per line with `--json`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use fgclip::checkpoint::Weights;
use fgclip::config::{
    ClipTextConfig, ClipVisionConfig, FgClipConfig, Fgclip2Config, Fgclip2TextConfig, Fgclip2VisionConfig,
};
use fgclip::fgclip1::FgClip;
use fgclip::fgclip2::{FgClip2, NaflexInput};
use fgclip::{flops, TextWalk};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Workload (see --list).
    #[arg(long, default_value = "fgclip-base-image")]
    pub workload: String,
    /// Batch sizes, comma-separated.
    #[arg(long, default_value = "1,16")]
    pub batch: String,
    /// Threads (sets RAYON_NUM_THREADS for the tensor backend).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Minimum measured seconds per batch size.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32 (parity reference) or bf16 (bf16 matrix products, f32 accumulation).
    #[arg(long, default_value = "f32", visible_alias = "dtype")]
    pub precision: String,
    /// Instead of timing, write a random checkpoint of the workload's model in the official layout
    /// (config.json + model.safetensors; tokenizer files are copied from --tokenizer-from) into this folder.
    #[arg(long)]
    pub write_checkpoint: Option<std::path::PathBuf>,
    /// Folder whose tokenizer files are copied next to a written checkpoint.
    #[arg(long)]
    pub tokenizer_from: Option<std::path::PathBuf>,
    /// Run candle's reference ops instead of the fused CPU kernels (to measure what they buy); for the train
    /// workloads, candle's composed ops instead of our fused LayerNorm / softmax / GELU with backward.
    #[arg(long, visible_alias = "no-fast")]
    pub reference: bool,
    /// List the workloads and exit.
    #[arg(long)]
    pub list: bool,
    #[arg(long)]
    pub json: bool,
}

pub const WORKLOADS: &[&str] = &[
    "fgclip-base-image",
    // What `fgclip index` asks of the model: the global embedding and the dense map from one tower pass
    // (GFLOP/s counts the global path only).
    "fgclip-base-image-dense",
    "fgclip-large-image",
    "fgclip-base-text-77",
    "fgclip-base-text-248",
    "fgclip2-base-image-256",
    "fgclip2-base-image-576",
    "fgclip2-base-image-1024",
    "fgclip2-base-image-dense-576",
    "fgclip2-base-text-64",
    "fgclip2-base-text-196",
    "preprocess-fgclip-640x480",
    "preprocess-fgclip2-640x480",
    "train-fgclip-base",
];

fn v1_config(large: bool) -> Result<FgClipConfig> {
    let (vision, text, proj) = if large {
        (
            r#"{"hidden_size":1024,"num_hidden_layers":24,"num_attention_heads":16,"intermediate_size":4096,"patch_size":14,"image_size":336}"#,
            r#"{"hidden_size":768,"num_hidden_layers":12,"num_attention_heads":12,"intermediate_size":3072}"#,
            768,
        )
    } else {
        (r#"{"patch_size":16,"image_size":224}"#, "{}", 512)
    };
    let vision: ClipVisionConfig = serde_json::from_str(vision)?;
    let text: ClipTextConfig = serde_json::from_str(text)?;
    Ok(FgClipConfig { vision, text, projection_dim: proj })
}

fn v2_config() -> Result<Fgclip2Config> {
    let text: Fgclip2TextConfig = serde_json::from_str(r#"{"vocab_size":256000}"#)?;
    let vision: Fgclip2VisionConfig = serde_json::from_str("{}")?;
    Ok(Fgclip2Config { text, vision })
}

/// Peak resident set size of this process in MiB (VmHWM).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

struct Measured {
    items_per_s: f64,
    latency_ms_median: f64,
    iterations: usize,
    /// Process CPU time per item over the timed steps (all threads).
    cpu_seconds_per_item: f64,
}

fn measure(batch: usize, warmup: usize, seconds: f64, mut step: impl FnMut() -> Result<()>) -> Result<Measured> {
    for _ in 0..warmup {
        step()?;
    }
    let mut lat = vec![];
    let cpu0 = crate::common::process_cpu_seconds();
    let start = Instant::now();
    while lat.len() < 3 || start.elapsed() < Duration::from_secs_f64(seconds) {
        let t = Instant::now();
        step()?;
        lat.push(t.elapsed().as_secs_f64());
    }
    let total = start.elapsed().as_secs_f64();
    let cpu = crate::common::process_cpu_seconds() - cpu0;
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(Measured {
        items_per_s: (batch * lat.len()) as f64 / total,
        latency_ms_median: lat[lat.len() / 2] * 1e3,
        iterations: lat.len(),
        cpu_seconds_per_item: cpu / (batch * lat.len()) as f64,
    })
}

pub fn run(a: Args) -> Result<()> {
    if a.list {
        for w in WORKLOADS {
            println!("{w}");
        }
        return Ok(());
    }
    if !WORKLOADS.contains(&a.workload.as_str()) {
        bail!("unknown --workload {:?}; one of: {}", a.workload, WORKLOADS.join(", "));
    }
    // Must happen before the first parallel op initialises the thread pool.
    std::env::set_var("RAYON_NUM_THREADS", a.threads.to_string());
    let device = crate::common::parse_device(&a.device)?;
    let precision: fgclip::Precision = a.precision.parse()?;
    let batches: Vec<usize> = a
        .batch
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .context("--batch: comma-separated numbers")?;
    if batches.contains(&0) {
        bail!("--batch sizes must be at least 1");
    }
    // The same plan `Model::load` makes: fused kernels unless --reference.
    let kernels = if a.reference { fgclip::Kernels::Reference } else { fgclip::Kernels::Auto };
    let plan = fgclip::ExecutionPlan::inference(&device, precision, kernels, None)?;
    let dtype = plan.weight_dtype();
    let w = Weights::random(0.02, dtype, &device);
    let wl = a.workload.as_str();
    if let Some(dir) = &a.write_checkpoint {
        return write_checkpoint(wl, dir, a.tokenizer_from.as_deref());
    }
    for &b in &batches {
        let (m, flops_per_item) = if let Some(rest) = wl.strip_prefix("preprocess-") {
            bench_preprocess(rest, b, &a)?
        } else if wl.starts_with("train-") {
            bench_train(b, &a, &device)?
        } else if wl.starts_with("fgclip-") {
            let cfg = v1_config(wl.contains("large"))?;
            let model = FgClip::load(&w, &cfg, &plan)?;
            if wl.ends_with("image") || wl.ends_with("image-dense") {
                let s = cfg.vision.image_size;
                let pv = Tensor::randn(0f32, 1.0, (b, 3, s, s), &device)?.to_dtype(dtype)?;
                let dense = wl.ends_with("dense");
                (
                    measure(b, a.warmup, a.seconds, || {
                        if dense {
                            model.image_and_dense_features(&pv)?;
                        } else {
                            model.image_features(&pv)?;
                        }
                        Ok(())
                    })?,
                    flops::fgclip_image(&cfg.vision, cfg.projection_dim),
                )
            } else {
                let len: usize = wl.rsplit('-').next().unwrap().parse()?;
                let ids = random_ids(b, len, 49406, Some(49407), &device)?;
                let long = len > cfg.text.max_position_embeddings;
                (
                    measure(b, a.warmup, a.seconds, || Ok(model.text_features(&ids, long).map(|_| ())?))?,
                    flops::fgclip_text(&cfg.text, len, cfg.projection_dim),
                )
            }
        } else {
            let cfg = v2_config()?;
            let model = FgClip2::load(&w, &cfg, &plan)?;
            let n: usize = wl.rsplit('-').next().unwrap().parse()?;
            if wl.contains("image") {
                let g = (n as f64).sqrt() as usize;
                let pv = Tensor::randn(0f32, 1.0, (b, n, 768), &device)?.to_dtype(dtype)?;
                let valid = Tensor::ones((b, n), DType::F32, &device)?;
                let grids = vec![(g, g); b];
                let input = NaflexInput { pixel_values: &pv, valid: &valid, grids: &grids };
                let dense = wl.contains("dense");
                (
                    measure(b, a.warmup, a.seconds, || {
                        if dense {
                            model.image_and_dense_features(&input)?;
                        } else {
                            model.image_features(&input)?;
                        }
                        Ok(())
                    })?,
                    flops::fgclip2_image(&cfg.vision, n),
                )
            } else {
                let ids = random_ids(b, n, 255_999, None, &device)?;
                let walk = if n > cfg.text.max_position_embeddings { TextWalk::Long } else { TextWalk::Short };
                (
                    measure(b, a.warmup, a.seconds, || Ok(model.text_features(&ids, None, walk).map(|_| ())?))?,
                    flops::fgclip2_text(&cfg.text, n),
                )
            }
        };
        let gflops = m.items_per_s * flops_per_item / 1e9;
        let rss = peak_rss_mib();
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "impl": "fgclip-rs", "workload": wl, "batch": b, "threads": a.threads, "device": a.device, "dtype": a.precision, "cpu_kernels": plan.isa.name(),
                    "items_per_s": m.items_per_s, "latency_ms_median": m.latency_ms_median, "iterations": m.iterations,
                    "cpu_seconds_per_item": m.cpu_seconds_per_item,
                    "peak_rss_mib": rss, "flops_per_item": flops_per_item, "achieved_gflops": gflops,
                })
            );
        } else {
            println!(
                "{wl:<28} b={b:<4} {:>9.2} items/s  {:>8.1} ms/batch  {:>7.1} GFLOP/s  peak RSS {:.0} MiB  ({} iters, {} threads)",
                m.items_per_s, m.latency_ms_median, gflops, rss, m.iterations, a.threads
            );
        }
    }
    Ok(())
}

fn random_ids(b: usize, len: usize, max: u32, eos_last: Option<u32>, device: &Device) -> Result<Tensor> {
    // A fixed LCG: reproducible ids without another dependency.
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut v = Vec::with_capacity(b * len);
    for _ in 0..b {
        for j in 0..len {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let id = match eos_last {
                Some(eos) if j == len - 1 => eos,
                _ => ((state >> 33) % max as u64) as u32,
            };
            v.push(id);
        }
    }
    Ok(Tensor::from_vec(v, (b, len), device)?)
}

/// Decode + preprocess of a 640×480 JPEG (a synthetic photo-like image encoded once), single-threaded;
/// `b` images per step.
fn bench_preprocess(which: &str, b: usize, a: &Args) -> Result<(Measured, f64)> {
    let (w, h) = (640u32, 480u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v = ((x as f32 * 0.05).sin() * 60.0 + (y as f32 * 0.03).cos() * 60.0 + 128.0) as u8;
        image::Rgb([v, v.wrapping_add((x * 3 % 97) as u8), v.wrapping_sub((y * 5 % 89) as u8)])
    });
    let mut jpeg = vec![];
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&img)
        .context("encoding the test JPEG")?;
    let v2 = which.starts_with("fgclip2");
    let m = measure(b, a.warmup, a.seconds, || {
        for _ in 0..b {
            let rgb = fgclip::fgclip_image::decode_rgb(&jpeg, "bench.jpg")?;
            if v2 {
                let n = fgclip::fgclip_image::naflex::bucket_max_patches(rgb.height, rgb.width);
                std::hint::black_box(fgclip::fgclip_image::naflex::preprocess(&rgb, 16, n, [0.5; 3], [0.5; 3]));
            } else {
                use fgclip::fgclip_image::clip;
                std::hint::black_box(clip::preprocess(&rgb, 224, clip::OPENAI_MEAN, clip::OPENAI_STD));
            }
        }
        Ok(())
    })?;
    Ok((m, 0.0))
}

/// Whether the workload runs an FG-CLIP (v1) model.
fn is_v1(wl: &str) -> bool {
    wl.starts_with("fgclip-") || wl.starts_with("train-fgclip-")
}

/// The official `config.json` of the workload's model.
fn config_json(wl: &str) -> Result<serde_json::Value> {
    Ok(if is_v1(wl) {
        let cfg = v1_config(wl.contains("large"))?;
        let (v, t) = (&cfg.vision, &cfg.text);
        serde_json::json!({
            "architectures": ["FGCLIPModel"], "model_type": "clip", "projection_dim": cfg.projection_dim,
            "vision_config": {"hidden_size": v.hidden_size, "num_hidden_layers": v.num_hidden_layers, "num_attention_heads": v.num_attention_heads,
                "intermediate_size": v.intermediate_size, "patch_size": v.patch_size, "image_size": v.image_size, "hidden_act": "quick_gelu"},
            "text_config": {"hidden_size": t.hidden_size, "num_hidden_layers": t.num_hidden_layers, "num_attention_heads": t.num_attention_heads,
                "intermediate_size": t.intermediate_size, "vocab_size": t.vocab_size, "max_position_embeddings": t.max_position_embeddings, "hidden_act": "quick_gelu"},
        })
    } else {
        let cfg = v2_config()?;
        let (v, t) = (&cfg.vision, &cfg.text);
        serde_json::json!({
            "architectures": ["FG_CLIP2_Model"], "model_type": "fgclip2",
            "vision_config": {"hidden_size": v.hidden_size, "num_hidden_layers": v.num_hidden_layers, "num_attention_heads": v.num_attention_heads,
                "intermediate_size": v.intermediate_size, "patch_size": v.patch_size, "num_patches": v.num_patches},
            "text_config": {"hidden_size": t.hidden_size, "num_hidden_layers": t.num_hidden_layers, "num_attention_heads": t.num_attention_heads,
                "intermediate_size": t.intermediate_size, "vocab_size": t.vocab_size, "max_position_embeddings": t.max_position_embeddings,
                "longtext_len": t.longtext_len, "keep_len": t.keep_len, "projection_size": t.projection_size()},
        })
    })
}

/// Writes the workload's model with random weights as an official-layout checkpoint (for RSS and end-to-end
/// measurements of the CLI at real sizes).
fn write_checkpoint(wl: &str, dir: &std::path::Path, tokenizer_from: Option<&std::path::Path>) -> Result<()> {
    // Building the model on random weights records every tensor it needs, with its shape.
    let w = Weights::random(0.02, DType::F32, &Device::Cpu);
    let plan =
        fgclip::ExecutionPlan::inference(&Device::Cpu, fgclip::Precision::F32, fgclip::Kernels::Reference, None)?;
    if is_v1(wl) {
        FgClip::load(&w, &v1_config(wl.contains("large"))?, &plan)?;
    } else {
        FgClip2::load(&w, &v2_config()?, &plan)?;
    }
    let config = config_json(wl)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config)?)?;
    let tensors: std::collections::BTreeMap<String, Tensor> = w.recorded().into_iter().collect();
    crate::common::write_safetensors(&dir.join("model.safetensors"), &tensors, Default::default())?;
    if let Some(src) = tokenizer_from {
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.json",
            "merges.txt",
            "special_tokens_map.json",
            "preprocessor_config.json",
        ] {
            if src.join(f).is_file() {
                std::fs::copy(src.join(f), dir.join(f)).with_context(|| format!("copying {f}"))?;
            }
        }
    }
    println!("wrote {} ({} tensors)", dir.display(), tensors.len());
    Ok(())
}

/// One training step of FG-CLIP-base as the H100 reference of issue #5 measures it: image (ViT-B/16, 224) and
/// long text (248 tokens) towers, forward + backward of the global InfoNCE loss, one AdamW update, f32.
/// The model is built from scratch (`Trainable::from_scratch` on the released config), so nothing is downloaded.
/// FLOPs per sample = 3 × the forward's (backward ≈ 2 × forward).
fn bench_train(b: usize, a: &Args, device: &Device) -> Result<(Measured, f64)> {
    use fgclip_train::optim::{AdamW, AdamWConfig};
    use fgclip_train::trainable::Trainable;
    if a.precision != "f32" {
        bail!("train workloads run in f32 (the bf16 CPU mode is inference-only)");
    }
    if b < 2 {
        bail!("train workloads need --batch ≥ 2 (a contrastive loss over one pair is constant)");
    }
    crate::common::keep_freed_memory_for_reuse();
    let dir = std::env::temp_dir().join(format!("fgclip-bench-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = config_json("train-fgclip-base")?;
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config)?)?;
    let model = Trainable::from_scratch(&dir.join("config.json"), vec![], 0, device);
    let _ = std::fs::remove_dir_all(&dir);
    // --reference: the composed candle ops instead of our fused training ops (to measure what those buy).
    let model = model?.with_kernels(if a.reference { fgclip::Kernels::Reference } else { fgclip::Kernels::Auto })?;
    let Some(m) = model.towers.as_any().downcast_ref::<FgClip>() else {
        bail!("train-fgclip-base builds an FG-CLIP model")
    };
    let cfg = v1_config(false)?;
    let long = m.text_model.long_len;
    let s = cfg.vision.image_size;
    let pv = Tensor::randn(0f32, 1.0, (b, 3, s, s), device)?;
    let ids = random_ids(b, long, 49406, Some(49407), device)?;
    let mut opt = AdamW::new(model.named_vars(), AdamWConfig { lr: 1e-5, ..AdamWConfig::fgclip() })?;
    let m = measure(b, a.warmup.min(1), a.seconds, || {
        let image = fgclip::nn::l2_normalize(&m.image_features(&pv)?)?;
        let text = fgclip::nn::l2_normalize(&m.text_features(&ids, true)?)?;
        let loss = fgclip::loss::clip_infonce(&image, &text, 0, b, &m.logit_scale.exp()?)?;
        let grads = loss.backward()?;
        opt.step(&grads, 1e-5, 1.0)?;
        Ok(())
    })?;
    let fwd =
        flops::fgclip_image(&cfg.vision, cfg.projection_dim) + flops::fgclip_text(&cfg.text, long, cfg.projection_dim);
    Ok((m, 3.0 * fwd))
}
