//! FineHARD / FgGRN record files (JSON array or JSON lines) through `fgclip_train::data::load_records`, under
//! both policies: Ok (records + per-line issues) or Err, never a panic; kept records pass `record_problem`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use fgclip_train::data::{load_records, record_problem, Policy};
use libfuzzer_sys::fuzz_target;

fn path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        dir.join(format!("fgclip-fuzz-records-{}.json", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let p = path();
    std::fs::write(p, data).expect("write the scratch file");
    let skip = load_records(p, Policy::Skip);
    let reject = load_records(p, Policy::Reject);
    if let Ok((records, issues)) = &skip {
        for r in records {
            assert!(record_problem(r).is_none(), "kept a record with a problem: {:?}", record_problem(r));
        }
        for i in issues {
            assert!(i.line >= 1, "issue line is 1-based: {i:?}");
        }
        // Reject succeeds exactly when Skip found nothing to report.
        assert_eq!(reject.is_ok(), issues.is_empty(), "skip issues {issues:?} vs reject {:?}", reject.as_ref().err());
    }
});
