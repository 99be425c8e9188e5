//! Finding the photos under the folders given to `fgclip index`: image extensions only, hidden files and the
//! usual junk folders skipped, `--exclude` globs (gitignore syntax, relative to each folder), symlinks followed
//! with loop detection. Problems (an unreadable folder, a symlink loop) are reported and the walk goes on.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use ignore::overrides::OverrideBuilder;
use ignore::WalkBuilder;

use crate::{Error, Result};

/// File extensions indexed (case-insensitive); the decoder itself sniffs the content.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "jpe", "jfif", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// Folder names never entered: caches, trash and NAS thumbnail stores, which hold copies or previews.
pub const JUNK_FOLDERS: &[&str] = &[
    "node_modules",
    "__pycache__",
    "@eaDir",
    "#recycle",
    "@Recycle",
    "$RECYCLE.BIN",
    "System Volume Information",
    "lost+found",
];

#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    /// Gitignore-style globs to skip (`*.png`, `raw/`, `**/tmp/**`).
    pub excludes: Vec<String>,
    /// Enter hidden files and folders too.
    pub hidden: bool,
}

/// A file found, with what decides whether it changed since the last run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundFile {
    pub path: PathBuf,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// Something under a root that could not be looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Scan {
    /// The roots as absolute, symlink-free paths.
    pub roots: Vec<PathBuf>,
    /// Sorted by path.
    pub files: Vec<FoundFile>,
    pub problems: Vec<Problem>,
}

pub fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

/// Walks `roots` (folders or single image files). A root that does not exist is an error: sweeping a folder
/// that is merely unmounted would otherwise drop its whole index.
pub fn scan(roots: &[PathBuf], opts: &ScanOptions) -> Result<Scan> {
    if roots.is_empty() {
        return Err(Error::input("no folders given to index"));
    }
    let mut out = Scan::default();
    for root in roots {
        let abs = std::fs::canonicalize(root)
            .map_err(|e| Error::input(format!("{}: cannot index it: {e}", root.display())))?;
        if abs.is_file() {
            let meta = std::fs::metadata(&abs).map_err(Error::io(&abs))?;
            out.files.push(FoundFile { path: abs.clone(), size: meta.len(), mtime_ns: mtime_ns(&meta) });
            out.roots.push(abs);
            continue;
        }
        let mut overrides = OverrideBuilder::new(&abs);
        for g in &opts.excludes {
            overrides.add(&format!("!{g}")).map_err(|e| Error::input(format!("--exclude {g:?}: {e}")))?;
        }
        let overrides = overrides.build().map_err(|e| Error::input(format!("--exclude: {e}")))?;
        let walker = WalkBuilder::new(&abs)
            .hidden(!opts.hidden)
            .follow_links(true)
            .parents(false)
            .ignore(false)
            .git_ignore(false)
            .git_global(false)
            .git_exclude(false)
            .require_git(false)
            .add_custom_ignore_filename(".fgclipignore")
            .overrides(overrides)
            .filter_entry(|e| {
                let junk = e.file_type().is_some_and(|t| t.is_dir())
                    && e.file_name().to_str().is_some_and(|n| JUNK_FOLDERS.contains(&n));
                !junk
            })
            .build();
        for entry in walker {
            match entry {
                Ok(e) => {
                    if !e.file_type().is_some_and(|t| t.is_file()) || !is_image_name(e.path()) {
                        continue;
                    }
                    match e.metadata() {
                        Ok(meta) => out.files.push(FoundFile {
                            path: e.path().to_path_buf(),
                            size: meta.len(),
                            mtime_ns: mtime_ns(&meta),
                        }),
                        Err(err) => {
                            out.problems.push(Problem { path: e.path().to_path_buf(), reason: err.to_string() })
                        }
                    }
                }
                Err(err) => out.problems.push(problem_of(&err, &abs)),
            }
        }
        out.roots.push(abs);
    }
    out.files.sort_by(|a, b| a.path.cmp(&b.path));
    out.files.dedup_by(|a, b| a.path == b.path);
    Ok(out)
}

/// The path an `ignore` error is about, and a one-line reason.
fn problem_of(err: &ignore::Error, root: &Path) -> Problem {
    fn path_of(err: &ignore::Error) -> Option<PathBuf> {
        match err {
            ignore::Error::WithPath { path, .. } => Some(path.clone()),
            ignore::Error::Loop { child, .. } => Some(child.clone()),
            ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => path_of(err),
            ignore::Error::Partial(errs) => errs.iter().find_map(path_of),
            _ => None,
        }
    }
    let reason = match err {
        ignore::Error::Loop { ancestor, .. } => format!("symlink loop back to {}", ancestor.display()),
        other => other.to_string(),
    };
    Problem { path: path_of(err).unwrap_or_else(|| root.to_path_buf()), reason }
}
