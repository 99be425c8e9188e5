//! The fgclip-search integration tests, one binary with a module per topic.

mod ann;
mod bad_input;
mod common;
mod incremental;
mod postgres;
mod search;

#[test]
fn no_module_cycles() {
    let cycles = fgclip_testkit::module_cycles(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(cycles.is_empty(), "module cycles: {cycles:?}");
}
