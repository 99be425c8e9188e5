//! Blocks as the execution plan builds them, and the stack of blocks a tower runs.
//!
//! A [`Block`] is a layer (its weights under the checkpoint's names) and, where the plan chose the fused CPU path,
//! the fused kernel built from it. Which one runs is fixed at construction; the layer is kept only when something
//! needs it (training, the reference path, FG-CLIP's dense value path, or f32 fusion, which shares its weights).

use std::sync::Arc;

use candle_core::{Result as CResult, Tensor};
use fgclip_kernels::cpu::Isa;

use super::block::EncoderLayer;
use super::fused::{FusedBlock, GemmPrecision};
use super::map_head::MapHead;
use super::mask::KeyMask;
use super::ops::OpSet;
use crate::checkpoint::Weights;
use crate::config::BlockDims;
use crate::Result;

/// How the blocks of a model are built: the op set of their layers and, for the fused CPU path, its GEMM
/// precision and kernel level. Made by `crate::plan::ExecutionPlan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockBuild {
    pub ops: OpSet,
    pub fuse: Option<(GemmPrecision, Isa)>,
}

/// A layer that the fused block can replace.
pub trait Fusable: Sized {
    fn forward(&self, x: &Tensor, mask: &KeyMask) -> CResult<Tensor>;
    fn fuse(&self, precision: GemmPrecision, isa: Isa) -> CResult<Option<FusedBlock>>;
}

impl Fusable for EncoderLayer {
    fn forward(&self, x: &Tensor, mask: &KeyMask) -> CResult<Tensor> {
        EncoderLayer::forward(self, x, mask)
    }
    fn fuse(&self, precision: GemmPrecision, isa: Isa) -> CResult<Option<FusedBlock>> {
        FusedBlock::new(self, precision, isa)
    }
}

/// As a block, FG-CLIP 2's `dense_feature_head` runs its dense self-attention.
impl Fusable for MapHead {
    fn forward(&self, x: &Tensor, mask: &KeyMask) -> CResult<Tensor> {
        self.dense(x, mask)
    }
    fn fuse(&self, precision: GemmPrecision, isa: Isa) -> CResult<Option<FusedBlock>> {
        FusedBlock::from_map_head(self, precision, isa)
    }
}

/// One block: the fused kernel, the layer, or both (at least one, by construction).
#[derive(Clone, Debug)]
pub struct Block<L> {
    fused: Option<Arc<FusedBlock>>,
    layer: Option<L>,
}

impl<L: Fusable> Block<L> {
    /// Builds the block the way `build` says. `keep_layer` keeps the layer beside a bf16 fused kernel (its f32
    /// weights are otherwise dropped, so memory holds one copy of the weights).
    pub fn build(layer: L, build: BlockBuild, keep_layer: bool) -> CResult<Self> {
        let Some((precision, isa)) = build.fuse else { return Ok(Self { fused: None, layer: Some(layer) }) };
        let Some(fused) = layer.fuse(precision, isa)? else {
            // The fused path does not cover this block (erf GELU): it runs its layer.
            return Ok(Self { fused: None, layer: Some(layer) });
        };
        let keep = keep_layer || precision == GemmPrecision::F32;
        Ok(Self { fused: Some(Arc::new(fused)), layer: keep.then_some(layer) })
    }

    pub fn forward(&self, x: &Tensor, mask: &KeyMask) -> CResult<Tensor> {
        match (&self.fused, &self.layer) {
            (Some(f), _) => f.forward(x, mask),
            (None, Some(l)) => l.forward(x, mask),
            (None, None) => candle_core::bail!("internal error: a block with neither kernel nor layer"),
        }
    }

    /// The layer, when this block kept it.
    pub fn layer(&self) -> Option<&L> {
        self.layer.as_ref()
    }

    /// What runs: `"layers"` or the fused kernel's summary.
    pub fn describe(&self) -> String {
        match &self.fused {
            Some(f) => format!("fused block ({})", f.describe()),
            None => "layers".into(),
        }
    }
}

/// A stack of encoder blocks.
#[derive(Clone, Debug)]
pub struct Encoder {
    pub blocks: Vec<Block<EncoderLayer>>,
}

impl Encoder {
    /// `w` is the tower's `encoder` prefix. `keep_last_layer` keeps the last block's layer whatever the fusion
    /// (FG-CLIP's dense path re-runs it).
    pub fn load(w: &Weights, d: &BlockDims, build: BlockBuild, keep_last_layer: bool) -> Result<Self> {
        let w = w.pp("layers");
        let blocks = (0..d.layers)
            .map(|i| {
                let layer = EncoderLayer::load(&w.pp(i), d, build.ops)?;
                Ok(Block::build(layer, build, keep_last_layer && i + 1 == d.layers)?)
            })
            .collect::<Result<_>>()?;
        Ok(Self { blocks })
    }

    pub fn forward(&self, x: &Tensor, mask: &KeyMask) -> CResult<Tensor> {
        let mut x = x.clone();
        for block in &self.blocks {
            x = block.forward(&x, mask)?;
        }
        Ok(x)
    }

    /// Runs every block; returns the output and the input of the last block (HF `hidden_states[-2]`).
    pub fn forward_with_penultimate(&self, x: &Tensor, mask: &KeyMask) -> CResult<(Tensor, Tensor)> {
        let mut x = x.clone();
        let mut penultimate = x.clone();
        for block in &self.blocks {
            penultimate = x.clone();
            x = block.forward(&x, mask)?;
        }
        Ok((x, penultimate))
    }
}
