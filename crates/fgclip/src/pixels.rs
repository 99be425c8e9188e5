//! A preprocessed image batch on the model's device: the tensor side of `fgclip_image::PixelBatch`, the one pixel
//! type both inference and training feed to the vision towers.

use candle_core::{DType, Device, Tensor};
use fgclip_image::PixelBatch;

use crate::Result;

/// Preprocessed images ready for the vision tower.
#[derive(Debug, Clone)]
pub struct PreparedImages {
    /// FG-CLIP: `[B, 3, S, S]`. FG-CLIP 2: `[B, N, p·p·3]` padded to the longest image (or the budget).
    pub pixel_values: Tensor,
    /// FG-CLIP 2 only: `[B, N]` 1 for real patches.
    pub valid: Option<Tensor>,
    /// Feature grid (rows, cols) of each image: (g, g) for FG-CLIP.
    pub grids: Vec<(usize, usize)>,
    /// Original image size (height, width) of each image, for mapping pixel boxes.
    pub sizes: Vec<(usize, usize)>,
}

impl PreparedImages {
    /// Moves a host batch to `device` with pixel values in `dtype` (the mask stays f32).
    pub fn from_batch(batch: PixelBatch, device: &Device, dtype: DType) -> Result<Self> {
        let PixelBatch { values, dims, valid, grids, sizes } = batch;
        let pixel_values = Tensor::from_vec(values, dims.as_slice(), device)?.to_dtype(dtype)?;
        let valid = match valid {
            Some(v) => Some(Tensor::from_vec(v, (dims[0], dims[1]), device)?),
            None => None,
        };
        Ok(Self { pixel_values, valid, grids, sizes })
    }

    pub fn len(&self) -> usize {
        self.grids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.grids.is_empty()
    }
}
