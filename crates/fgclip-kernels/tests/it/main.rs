//! The fgclip-kernels integration tests, one binary (one link step) with a module per topic.

mod attention_correctness;
mod gemm_blocking;
mod gemm_common;
mod gemm_correctness;
mod gemm_determinism;
