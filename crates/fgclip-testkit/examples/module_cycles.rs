//! Prints the import cycles between the modules of each `src` folder given: `cargo run -p fgclip-testkit
//! --example module_cycles -- crates/fgclip/src crates/fgclip-train/src`. Exits 1 when there is one.

fn main() {
    let mut found = false;
    for dir in std::env::args().skip(1) {
        let cycles = fgclip_testkit::module_cycles(std::path::Path::new(&dir));
        println!("{dir}: {}", if cycles.is_empty() { "no cycles".to_string() } else { format!("{cycles:?}") });
        found |= !cycles.is_empty();
    }
    std::process::exit(found as i32);
}
