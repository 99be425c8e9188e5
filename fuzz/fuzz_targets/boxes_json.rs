//! The `--boxes` file parser (`fgclip::tasks::parse_boxes_json`): on Ok every coordinate is finite.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(boxes) = fgclip::tasks::parse_boxes_json(text, None) {
        for img in &boxes {
            for b in img {
                assert!(b.iter().all(|v| v.is_finite()), "non-finite coordinate accepted: {b:?}");
            }
        }
        // With the entry count given, the same text must be accepted for that count.
        assert!(fgclip::tasks::parse_boxes_json(text, Some(boxes.len())).is_ok());
    }
});
