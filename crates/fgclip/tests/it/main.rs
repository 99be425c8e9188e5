//! The fgclip integration tests, one binary (one link step) with a module per topic.

mod bad_input;
mod bf16_vs_official;
mod common;
mod end_to_end_images;
mod fast_path;
mod hub_download;
mod hub_local;
mod hub_offline;
mod loss_parity;
mod parity_fgclip1;
mod parity_fgclip2;
mod storage_dtypes;
mod tokenizer_config_rules;
mod tokenizer_fixtures;
mod trainable;

/// No module of this crate imports, directly or through others, a module that imports it (docs/architecture.md).
#[test]
fn no_module_cycles() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let cycles = fgclip_testkit::module_cycles(&src);
    assert!(cycles.is_empty(), "import cycles between modules: {cycles:?}");
}
