//! The execution plan: how a model computes, decided once when it is built, from the device, the precision the
//! caller asks for and the CPU's features. Everything below it (layers, blocks, kernels) just runs what it was
//! built with; nothing checks a flag, a device or autograd while running.
//!
//! | device | use       | precision | blocks                                  | other layers          |
//! |--------|-----------|-----------|-----------------------------------------|-----------------------|
//! | CPU    | inference | f32       | fused CPU block, f32 GEMM               | candle forward kernels|
//! | CPU    | inference | bf16      | fused CPU block, bf16 GEMM + attention  | candle forward kernels|
//! | CPU    | training  | f32       | layers on fused CPU ops with backward   | same                  |
//! | other  | inference | f32/bf16  | layers on candle forward kernels        | same                  |
//! | other  | training  | f32       | layers on candle composed ops           | same                  |
//!
//! `Kernels::Reference` replaces every fused path by candle's own ops (the parity reference). A CUDA, int8 or
//! new-ISA backend is one more row here and one more variant of [`BlockBuild`]'s fusion; see `docs/architecture.md`.

use candle_core::{DType, Device};
use fgclip_kernels::cpu::Isa;

use crate::nn::{BlockBuild, GemmPrecision, OpSet};
use crate::{Error, Result};

/// Numerical precision, with the same meaning on every device: `F32` computes everything in f32 (the parity
/// reference); `Bf16` feeds matrix products (projections, MLP, attention products) with bf16 values and
/// accumulates them in f32, while norms, softmax and the residual stream stay f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" => Err(Error::input("precision f16: no f16 kernels exist for this build's devices; use bf16")),
            _ => Err(Error::input(format!("unknown precision {s:?} (expected f32 or bf16)"))),
        }
    }
}

/// Which kernels the plan may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Kernels {
    /// The fastest path the device, precision and CPU allow.
    #[default]
    Auto,
    /// candle's own ops only (the reference the fused paths are tested against; f32 only).
    Reference,
}

/// How a model computes; see the module docs.
#[derive(Clone, Debug)]
pub struct ExecutionPlan {
    pub device: Device,
    pub precision: Precision,
    /// CPU kernel level (detected, or forced by `FGCLIP_CPU` / the caller).
    pub isa: Isa,
    pub kernels: Kernels,
    /// Built for training (differentiable ops; weights are variables).
    pub training: bool,
}

impl ExecutionPlan {
    /// The plan of an inference model. `isa: None` takes `FGCLIP_CPU` or the detected level.
    pub fn inference(device: &Device, precision: Precision, kernels: Kernels, isa: Option<Isa>) -> Result<Self> {
        let isa = resolve_isa(isa)?;
        if precision == Precision::Bf16 && kernels == Kernels::Reference && device.is_cpu() {
            return Err(Error::input(
                "precision bf16 on the CPU runs in the fused kernels (bf16 GEMMs); the reference kernels are f32 only",
            ));
        }
        Ok(Self { device: device.clone(), precision, isa, kernels, training: false })
    }

    /// The plan of a trainable model (f32).
    pub fn training(device: &Device, kernels: Kernels) -> Result<Self> {
        let isa = resolve_isa(None)?;
        Ok(Self { device: device.clone(), precision: Precision::F32, isa, kernels, training: true })
    }

    /// The dtype weights are held in: f32 on the CPU (its bf16 lives inside the fused kernels' packed weights),
    /// the precision's dtype elsewhere.
    pub fn weight_dtype(&self) -> DType {
        match (self.precision, self.device.is_cpu()) {
            (Precision::Bf16, false) => DType::BF16,
            _ => DType::F32,
        }
    }

    /// The op set of every layer.
    pub fn ops(&self) -> OpSet {
        match (self.training, self.kernels, self.device.is_cpu()) {
            (false, _, _) => OpSet::Inference,
            (true, Kernels::Auto, true) => OpSet::CpuTrain,
            (true, _, _) => OpSet::Composed,
        }
    }

    /// How transformer blocks are built.
    pub fn blocks(&self) -> BlockBuild {
        let fuse = match (self.training, self.kernels, self.device.is_cpu()) {
            (false, Kernels::Auto, true) => Some((
                match self.precision {
                    Precision::F32 => GemmPrecision::F32,
                    Precision::Bf16 => GemmPrecision::Bf16,
                },
                self.isa,
            )),
            _ => None,
        };
        BlockBuild { ops: self.ops(), fuse }
    }

    /// One line per decision, for `fgclip info` and logs.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let device = match &self.device {
            Device::Cpu => "cpu".to_string(),
            d => format!("{d:?}"),
        };
        let blocks = match self.blocks().fuse {
            Some((GemmPrecision::F32, isa)) => format!("fused CPU block, f32 GEMM, {isa} kernels"),
            Some((GemmPrecision::Bf16, isa)) => {
                format!("fused CPU block, bf16 GEMM and attention products, {isa} kernels")
            }
            None => format!("layers ({})", self.ops().name()),
        };
        vec![
            ("device", device),
            ("precision", self.precision.name().to_string()),
            ("use", if self.training { "training" } else { "inference" }.to_string()),
            ("cpu_kernels", self.isa.to_string()),
            ("blocks", blocks),
            ("layers", self.ops().name().to_string()),
        ]
    }
}

fn resolve_isa(isa: Option<Isa>) -> Result<Isa> {
    match isa {
        Some(i) if !i.supported() => {
            Err(Error::input(format!("this CPU cannot run the {i} kernels (it supports up to {})", Isa::detect())))
        }
        Some(i) => Ok(i),
        None => Isa::from_env().map_err(Error::input),
    }
}
