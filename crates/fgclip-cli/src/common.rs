//! Options shared by the subcommands (model, device, precision, kernels) and small helpers.

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use fgclip::{Isa, Kernels, LoadOptions, Model, Precision, TextMask};

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Local checkpoint folder (official layout) or Hugging Face repo id, e.g. qihoo360/fg-clip2-base.
    #[arg(long, short = 'm', env = "FGCLIP_MODEL")]
    pub model: String,
    #[command(flatten)]
    pub run: RunArgs,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Model> {
        self.run.load(&self.model)
    }
}

/// How a model runs: device, precision, kernels, CPU level, text mask (every model command takes these).
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// cpu (cuda / cuda:N need a CUDA build, which does not exist yet).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32 (the parity reference) or bf16 (bf16 matrix products with f32 accumulation; ~2e-3 from f32).
    #[arg(long, default_value = "f32", visible_alias = "dtype")]
    pub precision: String,
    /// auto (the fused CPU kernels where they apply) or reference (candle's own ops, f32 only).
    #[arg(long, default_value = "auto")]
    pub kernels: String,
    /// CPU kernel level: portable, avx2, avx512 or avx512bf16 (default: the richest this CPU has).
    #[arg(long = "cpu", env = "FGCLIP_CPU", value_name = "LEVEL")]
    pub cpu: Option<String>,
    /// FG-CLIP 2 text padding mask: auto (what the checkpoint's tokenizer returns, as the official usage), on, off.
    #[arg(long, default_value = "auto")]
    pub text_mask: String,
}

impl RunArgs {
    pub fn load(&self, model: &str) -> Result<Model> {
        let device = parse_device(&self.device)?;
        let precision: Precision = self.precision.parse().context("--precision")?;
        let kernels = parse_kernels(&self.kernels)?;
        let isa = match self.cpu.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(c) => Some(Isa::parse(c).map_err(|e| anyhow::anyhow!("--cpu: {e}"))?),
            None => None,
        };
        let text_mask = match self.text_mask.as_str() {
            "auto" => TextMask::Auto,
            "on" => TextMask::On,
            "off" => TextMask::Off,
            m => bail!("unknown --text-mask {m:?} (expected auto, on or off)"),
        };
        let opts = LoadOptions { device, precision, kernels, isa, text_mask };
        Model::load(model, &opts).with_context(|| format!("loading model {model}"))
    }
}

/// `--kernels`: auto or reference.
pub fn parse_kernels(s: &str) -> Result<Kernels> {
    match s {
        "auto" => Ok(Kernels::Auto),
        "reference" => Ok(Kernels::Reference),
        k => bail!("unknown --kernels {k:?} (expected auto or reference)"),
    }
}

pub fn parse_device(s: &str) -> Result<Device> {
    fgclip::parse_device(s).map_err(|e| anyhow::anyhow!("--device {e}"))
}

/// Reads labels from a comma-separated list or a file (one per line; blank lines and `#` comments skipped).
pub fn read_labels(list: Option<&str>, file: Option<&std::path::Path>) -> Result<Vec<String>> {
    let mut labels: Vec<String> = vec![];
    if let Some(l) = list {
        labels.extend(l.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
    }
    if let Some(f) = file {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading labels file {}", f.display()))?;
        labels
            .extend(text.lines().map(|s| s.trim()).filter(|s| !s.is_empty() && !s.starts_with('#')).map(String::from));
    }
    if labels.is_empty() {
        bail!("the label list is empty: give --labels \"a,b,c\" or --labels-file F");
    }
    Ok(labels)
}

/// `x1,y1,x2,y2` → box.
pub fn parse_box(s: &str) -> Result<[f32; 4]> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("box {s:?}: expected four numbers x1,y1,x2,y2"))?;
    match v.as_slice() {
        [a, b, c, d] if v.iter().all(|x| x.is_finite()) => Ok([*a, *b, *c, *d]),
        _ => bail!("box {s:?}: expected four finite numbers x1,y1,x2,y2"),
    }
}

/// A progress bar on stderr (hidden for `--json` runs and when stderr is not a terminal).
pub fn progress(len: u64, what: &str, quiet: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {bar:30} {pos}/{len} {msg} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_message(what.to_string());
    pb
}

/// Writes tensors as f32 safetensors with string metadata.
pub fn write_safetensors(
    path: &std::path::Path,
    tensors: &std::collections::BTreeMap<String, candle_core::Tensor>,
    meta: std::collections::HashMap<String, String>,
) -> Result<()> {
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = vec![];
    for (k, t) in tensors {
        let v: Vec<f32> = t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
        if v.iter().any(|x| x.is_nan()) {
            bail!("internal error: tensor {k} contains NaN");
        }
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        data.push((k.clone(), t.dims().to_vec(), bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(k, s, b)| Ok((k.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_>>()?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    safetensors::serialize_to_file(views, Some(meta), path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `--max-patches N` → the NaFlex patch budget (absent: the official dynamic bucket). A model with a fixed square
/// input (FG-CLIP) ignores it, with a warning.
pub fn patch_budget(max_patches: Option<usize>, model: &Model) -> Result<fgclip::PatchBudget> {
    let square = matches!(model.processor.layout, fgclip::fgclip_image::PixelLayout::Square { .. });
    match max_patches {
        Some(0) => bail!("--max-patches must be at least 1"),
        Some(_) if square => {
            eprintln!("warning: --max-patches only applies to FG-CLIP 2; FG-CLIP uses its fixed square input");
            Ok(fgclip::PatchBudget::Dynamic)
        }
        Some(n) => Ok(fgclip::PatchBudget::Fixed(n)),
        None => Ok(fgclip::PatchBudget::Dynamic),
    }
}

/// Fails early (before loading a model) when an image path does not name a file.
pub fn check_image_files(paths: &[std::path::PathBuf]) -> Result<()> {
    for p in paths {
        if !p.exists() {
            bail!("image file not found: {}", p.display());
        }
        if !p.is_file() {
            bail!("image path is not a file: {}", p.display());
        }
    }
    Ok(())
}

/// Checks `--template` values before any model is loaded.
pub fn check_templates(templates: &[String]) -> Result<()> {
    for t in templates {
        fgclip::tasks::apply_template(t, "x").map_err(|e| anyhow::anyhow!("--template: {e}"))?;
    }
    Ok(())
}

/// L2-normalised (template-averaged) label embeddings, errors phrased for the command line.
pub fn encode_labels(
    model: &Model,
    labels: &[String],
    templates: &[String],
    walk: fgclip::TextWalk,
) -> Result<candle_core::Tensor> {
    if labels.is_empty() {
        bail!("the label list is empty: give --labels \"a,b,c\" or --labels-file F");
    }
    fgclip::tasks::encode_labels(model, labels, templates, walk).context("encoding the label texts")
}

/// For training: keep freed blocks of up to 32 MiB in the heap for reuse instead of returning them to the
/// kernel. A training step allocates and frees hundreds of 1–30 MiB tensors; glibc serves each from a fresh
/// mapping whose pages the kernel must zero on first touch (page clearing and faults were ~12 % of an FG-CLIP-base
/// CPU step under perf; this setting made the step 1.17× faster at the same peak RSS). No-op off glibc.
pub fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; called before the allocations it concerns.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// CPU seconds (user + system, all threads) this process has used so far: a work measure that, unlike wall
/// time, does not move when a shared machine is busy elsewhere.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(u.ru_utime) + secs(u.ru_stime)
}
