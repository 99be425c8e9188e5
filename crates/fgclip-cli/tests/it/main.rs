//! The fgclip-cli integration tests, one binary (one link step) with a module per topic.

mod cli_bench;
mod cli_boxes;
mod cli_classify;
mod cli_convert;
mod cli_heatmap;
mod cli_process;
mod cli_search;
mod cli_synth_eval;
mod cli_train;
mod common;
mod features_parity;

/// No module of this crate imports, directly or through others, a module that imports it (docs/architecture.md).
#[test]
fn no_module_cycles() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let cycles = fgclip_testkit::module_cycles(&src);
    assert!(cycles.is_empty(), "import cycles between modules: {cycles:?}");
}
