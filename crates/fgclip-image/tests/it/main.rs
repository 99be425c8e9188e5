//! The fgclip-image integration tests, one binary (one link step) with a module per topic.

mod bad_input;
mod common;
mod fixtures_v1;
mod fixtures_v2;
mod pil_cases;
mod reduced_decode;

/// No module of this crate imports, directly or through others, a module that imports it (docs/architecture.md).
#[test]
fn no_module_cycles() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let cycles = fgclip_testkit::module_cycles(&src);
    assert!(cycles.is_empty(), "import cycles between modules: {cycles:?}");
}
