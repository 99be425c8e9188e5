//! Shared helpers of the fgclip tests: the fixtures and tensor comparisons come from `fgclip-testkit`.

#![allow(dead_code)]

use candle_core::Tensor;
#[allow(unused_imports)]
pub use fgclip_testkit::{assert_close, fixture_file, fixtures_dir, load_tensors, max_abs_diff};

/// L2-normalise rows (last dim), as the official `x / x.norm(dim=-1, keepdim=True)`.
pub fn l2n(x: &Tensor) -> Tensor {
    fgclip::nn::l2_normalize(x).unwrap()
}
