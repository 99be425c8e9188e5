//! Hot-path CPU kernels of fgclip-rs, on plain slices (no tensor framework): the model crate wraps them in
//! candle custom ops. Every kernel has a portable fallback and is checked against a straightforward reference.

pub mod activation;
pub mod attention;
pub mod cpu;
pub mod gemm;
pub mod norm;
