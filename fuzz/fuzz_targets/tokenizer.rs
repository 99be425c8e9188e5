//! Arbitrary UTF-8 text through both fixture tokenizers (FG-CLIP v1: CLIP BPE; FG-CLIP 2: Gemma-style), at the
//! lengths the models use: every row has exactly `len` ids and a 0/1 mask.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use fgclip::hub::ModelFiles;
use fgclip::tokenize::{TextTokenizer, TokenizerOptions};
use libfuzzer_sys::fuzz_target;

fn fixtures() -> PathBuf {
    std::env::var_os("FGCLIP_FIXTURES").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/work/shared/fixtures"))
}

fn load(sub: &str, opts: TokenizerOptions) -> TextTokenizer {
    let dir = fixtures().join(sub).join("model");
    let files = ModelFiles::from_dir(&dir).unwrap_or_else(|e| panic!("fixture model {}: {e}", dir.display()));
    TextTokenizer::from_files(&files, opts).unwrap_or_else(|e| panic!("tokenizer {}: {e}", dir.display()))
}

fn tokenizers() -> &'static [(TextTokenizer, [usize; 2]); 2] {
    static T: OnceLock<[(TextTokenizer, [usize; 2]); 2]> = OnceLock::new();
    T.get_or_init(|| {
        [
            (load("fgclip_v1", TokenizerOptions::default()), [77, 248]),
            (load("fgclip2", TokenizerOptions::fgclip2()), [64, 196]),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for (tok, lens) in tokenizers() {
        for &len in lens {
            let b = tok.encode(&[text], len).unwrap_or_else(|e| panic!("encode failed (len {len}): {e}"));
            assert_eq!((b.n, b.len), (1, len), "batch shape");
            assert_eq!(b.ids.len(), len, "ids of the row");
            assert_eq!(b.attention_mask.len(), len, "mask of the row");
            assert_eq!(b.row(0).len(), len);
            assert!(b.mask_row(0).iter().all(|&m| m <= 1), "mask not 0/1: {:?}", b.mask_row(0));
        }
    }
});
