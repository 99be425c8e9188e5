//! Checkpoint weights: memory-mapped safetensors (single file or shards) behind a small path builder whose
//! lookups fail with errors that name the tensor and its expected and found shapes.
//!
//! Each tensor is copied out of the mapping once (converted to the compute dtype) and its pages are then
//! released (`madvise(DONTNEED)`), so a loaded model costs about one copy of the checkpoint in resident memory
//! instead of two (file pages count in RSS too).
//!
//! Model code asks for tensors by the checkpoint key path (`vision_model.encoder.layers.3.mlp.fc1.weight`), built
//! with [`Weights::pp`] the way candle-nn's `VarBuilder` does. The same model code runs on frozen mmapped
//! tensors (inference) or on trainable [`candle_core::Var`]s (training): see [`Weights::from_varmap`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::VarMap;

use crate::{Error, Result};

/// One mapped safetensors file: its header is parsed once, tensor bytes are read on demand.
struct MappedFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    data_start: usize,
    meta: safetensors::tensor::Metadata,
}

/// All shards of a checkpoint, with the file each tensor lives in.
struct Mapped {
    files: Vec<MappedFile>,
    routing: HashMap<String, usize>,
}

impl Mapped {
    fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = vec![];
        let mut routing = HashMap::new();
        for (i, p) in paths.iter().enumerate() {
            let err = |msg: String| Error::File { path: p.clone(), msg };
            let f = std::fs::File::open(p).map_err(|e| err(format!("cannot open: {e}")))?;
            let len = f.metadata().map_err(|e| err(format!("cannot stat: {e}")))?.len();
            if len < 8 {
                return Err(err(format!("not a safetensors file (shorter than its 8-byte header: {len} bytes)")));
            }
            // SAFETY: mapped read-only; as with any mmap, the file must not be modified while mapped.
            let mmap = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| err(format!("cannot map: {e}")))?;
            // read_metadata also checks that the data section holds every tensor's bytes.
            let (header, meta) = safetensors::SafeTensors::read_metadata(&mmap[..]).map_err(|e| {
                use safetensors::SafeTensorError as E;
                match e {
                    E::MetadataIncompleteBuffer | E::InvalidHeaderLength => {
                        err(format!("truncated (or not a safetensors file): {e:?}, file size {len}"))
                    }
                    e => err(format!("not a valid safetensors file: {e}")),
                }
            })?;
            for name in meta.tensors().keys() {
                routing.insert(name.clone(), i);
            }
            files.push(MappedFile { path: p.clone(), mmap, data_start: 8 + header, meta });
        }
        Ok(Self { files, routing })
    }

    fn info(&self, key: &str) -> Option<(&MappedFile, &safetensors::tensor::TensorInfo)> {
        let f = &self.files[*self.routing.get(key)?];
        Some((f, f.meta.info(key)?))
    }

    /// Copies one tensor out of the mapping, then drops its pages from this process.
    fn load(&self, key: &str, device: &Device) -> Result<Option<Tensor>> {
        let Some((f, info)) = self.info(key) else { return Ok(None) };
        let dtype = match info.dtype {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F64 => DType::F64,
            safetensors::Dtype::I64 => DType::I64,
            safetensors::Dtype::U32 => DType::U32,
            safetensors::Dtype::U8 => DType::U8,
            other => {
                return Err(Error::File {
                    path: f.path.clone(),
                    msg: format!("tensor `{key}` has unsupported dtype {other:?}"),
                })
            }
        };
        let (start, end) = (f.data_start + info.data_offsets.0, f.data_start + info.data_offsets.1);
        let bytes = f.mmap.get(start..end).ok_or_else(|| Error::File {
            path: f.path.clone(),
            msg: format!("tensor `{key}` lies outside the file (truncated?)"),
        })?;
        let t = Tensor::from_raw_buffer(bytes, dtype, &info.shape, device)?;
        // SAFETY: the mapping is read-only and file-backed: dropped pages are re-read from the file if touched
        // again, so no data is lost and no reference observes a change.
        #[cfg(unix)]
        unsafe {
            let _ = f.mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start);
        }
        Ok(Some(t))
    }

    fn names(&self) -> Vec<String> {
        self.routing.keys().cloned().collect()
    }

    fn dtypes(&self) -> Vec<String> {
        self.files
            .iter()
            .flat_map(|f| f.meta.tensors().values().map(|i| format!("{:?}", i.dtype)).collect::<Vec<_>>())
            .collect()
    }
}

enum Source {
    Mmap(Mapped),
    Tensors(HashMap<String, Tensor>),
    Vars(VarMap),
    /// Random weights of whatever shape is asked for (benchmarks at real sizes without downloads); every
    /// tensor handed out is recorded so it can be saved as a checkpoint.
    Random {
        std: f64,
        record: std::sync::Mutex<HashMap<String, Tensor>>,
    },
}

/// A view of the checkpoint at a key prefix.
#[derive(Clone)]
pub struct Weights {
    source: Arc<Source>,
    prefix: String,
    dtype: DType,
    device: Device,
}

impl Weights {
    /// Memory-maps the safetensors files (one file, or all shards of an index). Tensors are converted to
    /// `dtype` on `device` when first requested; storage may be f32, bf16 or f16.
    pub fn from_safetensors(paths: &[PathBuf], dtype: DType, device: &Device) -> Result<Self> {
        Ok(Self::new(Source::Mmap(Mapped::open(paths)?), dtype, device))
    }

    /// In-memory tensors (tests, conversions).
    pub fn from_tensors(ts: HashMap<String, Tensor>, dtype: DType, device: &Device) -> Self {
        Self::new(Source::Tensors(ts), dtype, device)
    }

    /// Trainable variables: every tensor handed to the model is a [`Var`] of `varmap`, so gradients flow to it.
    /// Fill the map first (e.g. [`load_into_varmap`]); a key that is not in the map is reported as missing.
    pub fn from_varmap(varmap: &VarMap, dtype: DType, device: &Device) -> Self {
        Self::new(Source::Vars(varmap.clone()), dtype, device)
    }

    /// Random normal weights (std `std`; LayerNorm-style `weight` vectors near 1) of the requested shapes: a
    /// model of any configuration without a checkpoint, for benchmarks and shape tests.
    pub fn random(std: f64, dtype: DType, device: &Device) -> Self {
        Self::new(Source::Random { std, record: Default::default() }, dtype, device)
    }

    /// The tensors a random source has handed out so far, by checkpoint key (empty for other sources).
    pub fn recorded(&self) -> HashMap<String, Tensor> {
        match &*self.source {
            Source::Random { record, .. } => record.lock().map(|r| r.clone()).unwrap_or_default(),
            _ => HashMap::new(),
        }
    }

    fn new(source: Source, dtype: DType, device: &Device) -> Self {
        Self { source: Arc::new(source), prefix: String::new(), dtype, device: device.clone() }
    }

    /// Descends one level of the key path: `w.pp("encoder").pp("layers").pp(3)`.
    pub fn pp(&self, s: impl ToString) -> Self {
        let s = s.to_string();
        let prefix = if self.prefix.is_empty() { s } else { format!("{}.{}", self.prefix, s) };
        Self { prefix, ..self.clone() }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        let key = self.path(name);
        match &*self.source {
            Source::Mmap(st) => st.info(&key).is_some(),
            Source::Tensors(ts) => ts.contains_key(&key),
            Source::Vars(vm) => vm.data().lock().map(|d| d.contains_key(&key)).unwrap_or(false),
            Source::Random { .. } => true,
        }
    }

    /// The tensor at `name` under this prefix, checked against `shape`.
    pub fn get(&self, shape: impl Into<Shape>, name: &str) -> Result<Tensor> {
        let key = self.path(name);
        let expected: Shape = shape.into();
        if let Source::Random { std, record } = &*self.source {
            let t = Tensor::randn(0f32, *std as f32, expected.clone(), &self.device)?;
            // 1-D `weight`s are norm scales: keep them near 1 so activations stay in range.
            let t = if expected.rank() == 1 && name == "weight" { (t + 1.0)? } else { t };
            let t = t.to_dtype(self.dtype)?;
            if let Ok(mut r) = record.lock() {
                r.insert(key, t.clone());
            }
            return Ok(t);
        }
        let t = self.get_any(&key)?;
        if t.dims() != expected.dims() {
            return Err(Error::TensorShape { name: key, expected: expected.dims().to_vec(), found: t.dims().to_vec() });
        }
        Ok(t)
    }

    /// The tensor at `name` whatever its shape (for tables whose size the checkpoint decides).
    pub fn get_unchecked(&self, name: &str) -> Result<Tensor> {
        self.get_any(&self.path(name))
    }

    /// The shape of `name` without loading it.
    pub fn shape_of(&self, name: &str) -> Result<Vec<usize>> {
        let key = self.path(name);
        match &*self.source {
            Source::Mmap(st) => st.info(&key).map(|(_, i)| i.shape.clone()).ok_or(Error::MissingTensor { name: key }),
            Source::Random { .. } => Err(Error::MissingTensor { name: key }),
            _ => Ok(self.get_any(&key)?.dims().to_vec()),
        }
    }

    fn get_any(&self, key: &str) -> Result<Tensor> {
        let missing = || Error::MissingTensor { name: key.to_string() };
        let t = match &*self.source {
            // Converted on the host, then moved: one transfer of compute-dtype data.
            Source::Mmap(st) => st.load(key, &Device::Cpu)?.ok_or_else(missing)?,
            Source::Tensors(ts) => ts.get(key).cloned().ok_or_else(missing)?,
            Source::Vars(vm) => {
                let data = vm.data().lock().map_err(|_| Error::input("variable map lock poisoned"))?;
                return Ok(data.get(key).ok_or_else(missing)?.as_tensor().clone());
            }
            Source::Random { .. } => {
                return Err(Error::input(format!("random weights need a shape: `{key}` was asked for without one")))
            }
        };
        let t = if t.dtype() != self.dtype { t.to_dtype(self.dtype)? } else { t };
        Ok(t.to_device(&self.device)?)
    }

    /// Every tensor name in the checkpoint (sorted), for `info` and diagnostics.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = match &*self.source {
            Source::Mmap(st) => st.names(),
            Source::Tensors(ts) => ts.keys().cloned().collect(),
            Source::Vars(vm) => vm.data().lock().map(|d| d.keys().cloned().collect()).unwrap_or_default(),
            Source::Random { .. } => vec![],
        };
        v.sort();
        v
    }

    /// Storage dtypes found in the checkpoint (for `info`).
    pub fn storage_dtypes(&self) -> Vec<String> {
        let mut v: Vec<String> = match &*self.source {
            Source::Mmap(st) => st.dtypes(),
            _ => vec![format!("{:?}", self.dtype)],
        };
        v.sort();
        v.dedup();
        v
    }
}

/// Loads every tensor of the checkpoint files into `varmap` as trainable variables of `dtype`.
pub fn load_into_varmap(paths: &[PathBuf], varmap: &VarMap, dtype: DType, device: &Device) -> Result<()> {
    let w = Weights::from_safetensors(paths, dtype, device)?;
    let mut data = varmap.data().lock().map_err(|_| Error::input("variable map lock poisoned"))?;
    for name in w.names() {
        let t = w.get_unchecked(&name)?;
        data.insert(name, Var::from_tensor(&t)?);
    }
    Ok(())
}
