//! Test support shared by every crate's integration tests.
//!
//! The parity fixtures (tiny checkpoints in the official layout with the official code's outputs) live outside
//! the repository: `$FGCLIP_FIXTURES`, else `../shared/fixtures` beside the workspace. Where they are missing a
//! test prints `SKIP` and returns, unless `FGCLIP_REQUIRE_FIXTURES=1` (CI sets it): then it fails, so a run that
//! lost its fixtures can never pass by skipping.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

/// Whether a missing fixture fails the test (`FGCLIP_REQUIRE_FIXTURES=1`).
pub fn fixtures_required() -> bool {
    matches!(std::env::var("FGCLIP_REQUIRE_FIXTURES").as_deref(), Ok("1") | Ok("true") | Ok("yes"))
}

/// Where the fixtures should be.
pub fn fixtures_path() -> PathBuf {
    match std::env::var_os("FGCLIP_FIXTURES") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"),
    }
}

/// Reports a missing fixture: panics when fixtures are required, else prints `SKIP` and returns `None`.
#[track_caller]
pub fn missing<T>(what: &Path) -> Option<T> {
    let msg = format!("fixture {} not found (set FGCLIP_FIXTURES to the shared/fixtures folder)", what.display());
    if fixtures_required() {
        panic!("FGCLIP_REQUIRE_FIXTURES=1: {msg}");
    }
    eprintln!("SKIP: {msg}");
    None
}

/// The fixtures folder (it must hold `manifest.json`), or `None` after [`missing`].
#[track_caller]
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = fixtures_path();
    if dir.join("manifest.json").is_file() {
        Some(dir.canonicalize().unwrap_or(dir))
    } else {
        missing(&dir)
    }
}

/// A file under the fixtures folder, or `None` after [`missing`].
#[track_caller]
pub fn fixture_file(rel: &str) -> Option<PathBuf> {
    let p = fixtures_dir()?.join(rel);
    if p.exists() {
        Some(p)
    } else {
        missing(&p)
    }
}

/// Every tensor of a safetensors file, on the CPU.
pub fn load_tensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Max |a − b| over all elements (shapes must match).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Asserts `max |got − want| ≤ tol` and no NaN, printing the measured error.
#[track_caller]
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let d = max_abs_diff(got, want);
    eprintln!("{what}: max abs diff {d:.3e} (tol {tol:.0e})");
    assert!(d.is_finite() && d <= tol, "{what}: max abs diff {d} > {tol}");
}

/// Max |a − b| of two slices (panics on length mismatch).
pub fn max_abs_diff_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The import cycles between the modules of the crate whose `src` folder is `src`: every strongly connected group
/// of two or more modules, each a sorted list of `a::b` paths. An edge `a → b` is a `use crate::b…` /
/// `use super::…` / inline `crate::b::…` path in `a`'s code (test modules included, comments not), resolved to the deepest module
/// that exists; an edge to a module's own ancestor through one of its re-exports counts, so keep shared items in
/// leaf modules.
pub fn module_cycles(src: &Path) -> Vec<Vec<String>> {
    let mut files = Vec::new();
    collect_rs(src, &mut files);
    let module_of = |p: &Path| -> String {
        let rel = p.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
            parts.pop();
        }
        parts.join("::")
    };
    let modules: std::collections::BTreeSet<String> = files.iter().map(|p| module_of(p)).collect();
    let resolve = |path: &[String]| -> Option<String> {
        (1..=path.len()).rev().map(|n| path[..n].join("::")).find(|m| modules.contains(m))
    };
    let mut edges: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for f in &files {
        let me = module_of(f);
        // Comments (docs included) name modules without importing them.
        let text: String = std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
            .collect::<Vec<_>>()
            .join("\n");
        let parent: Vec<String> = {
            let mut p: Vec<String> = me.split("::").filter(|s| !s.is_empty()).map(String::from).collect();
            let is_dir_module = f.file_name().is_some_and(|n| n == "mod.rs");
            if !is_dir_module {
                p.pop();
            }
            p
        };
        for (prefix, base) in [("crate::", Vec::new()), ("super::", parent.clone())] {
            let mut rest = text.as_str();
            while let Some(i) = rest.find(prefix) {
                let before = rest[..i].chars().last();
                rest = &rest[i + prefix.len()..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let path_text: String = rest
                    .chars()
                    .take_while(|c| {
                        c.is_alphanumeric() || *c == '_' || *c == ':' || *c == '{' || *c == ',' || *c == ' '
                    })
                    .collect();
                let (head, group) = match path_text.split_once('{') {
                    Some((h, g)) => (h, Some(g)),
                    None => (path_text.as_str(), None),
                };
                let mut path = base.clone();
                path.extend(head.split("::").map(str::trim).filter(|s| !s.is_empty()).map(String::from));
                let mut targets = vec![path.clone()];
                if let Some(g) = group {
                    for item in g.split(',') {
                        let mut p = path.clone();
                        p.extend(
                            item.split("::").map(str::trim).filter(|s| !s.is_empty() && *s != "self").map(String::from),
                        );
                        targets.push(p);
                    }
                }
                for t in targets {
                    if let Some(m) = resolve(&t) {
                        if m != me && !m.is_empty() {
                            edges.entry(me.clone()).or_default().insert(m);
                        }
                    }
                }
            }
        }
    }
    // Strongly connected components by mutual reachability (the graphs are small).
    let reach = |from: &String| -> std::collections::BTreeSet<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for m in edges.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
        seen
    };
    let reach_of: std::collections::BTreeMap<&String, std::collections::BTreeSet<String>> =
        modules.iter().map(|m| (m, reach(m))).collect();
    let mut cycles: Vec<Vec<String>> = Vec::new();
    for m in &modules {
        let group: Vec<String> = modules
            .iter()
            .filter(|o| *o != m && reach_of[m].contains(*o) && reach_of[*o].contains(m))
            .cloned()
            .collect();
        if !group.is_empty() {
            let mut c = group;
            c.push(m.clone());
            c.sort();
            if !cycles.contains(&c) {
                cycles.push(c);
            }
        }
    }
    cycles
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The PostgreSQL server (with the pgvector extension) tests may use: `$FGCLIP_PG_URL`, which `scripts/test.sh`
/// sets after starting one on 127.0.0.1 with `scripts/pg.sh`. Missing: `SKIP` and `None`, or a failure with
/// `FGCLIP_REQUIRE_FIXTURES=1` (CI), so the Postgres tests can never pass by skipping there.
#[track_caller]
pub fn pg_url() -> Option<String> {
    match std::env::var("FGCLIP_PG_URL") {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            let msg = "FGCLIP_PG_URL is not set (run the tests through scripts/test.sh, which starts PostgreSQL)";
            if fixtures_required() {
                panic!("FGCLIP_REQUIRE_FIXTURES=1: {msg}");
            }
            eprintln!("SKIP: {msg}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// The detector finds a cycle through `super::`, a grouped `use`, and an inline path, and none in a layered tree.
    #[test]
    fn module_cycles_finds_cycles_and_only_cycles() {
        let root = std::env::temp_dir().join(format!("fgclip-testkit-cycles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        write(&root, "lib.rs", "pub mod nn;\npub mod config;\npub mod model;\n");
        write(&root, "nn/mod.rs", "pub mod layers;\npub mod attention;\n");
        write(&root, "nn/layers.rs", "use super::attention::Attention;\n");
        write(&root, "nn/attention.rs", "use crate::nn::{layers::Linear, self};\n");
        write(&root, "config.rs", "fn f() { let _ = crate::model::X; }\n");
        write(&root, "model.rs", "use crate::config;\n");
        let mut c = module_cycles(&root);
        c.sort();
        assert_eq!(
            c,
            vec![
                vec!["config".to_string(), "model".to_string()],
                vec!["nn::attention".to_string(), "nn::layers".to_string()]
            ]
        );
        write(&root, "nn/attention.rs", "use crate::config::Thing;\n");
        write(&root, "config.rs", "pub struct Thing;\n");
        assert!(module_cycles(&root).is_empty());
        let _ = std::fs::remove_dir_all(&root);
    }
}
