//! The fgclip-train integration tests, one binary (one link step) with a module per topic.

mod ablation;
mod collate_parity;
mod common;
mod data_records;
mod dist_gather;
mod init_backbone;
mod loader;
mod objective_parity;
mod parquet_records;
mod search_quality;
mod synth;
mod trainer_loop;

/// No module of this crate imports, directly or through others, a module that imports it (docs/architecture.md).
#[test]
fn no_module_cycles() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let cycles = fgclip_testkit::module_cycles(&src);
    assert!(cycles.is_empty(), "import cycles between modules: {cycles:?}");
}
