//! FineHARD / FgGRN training records and FG-OVD evaluation lines, as serde types (docs/data.md). Loading and
//! validation are in [`crate::data`], the parquet reader in [`crate::parquet`]; both build these.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One training record of a FineHARD json file (EN) or a CN pair file (FG-CLIP 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Image path relative to the image folder.
    pub f_path: String,
    /// Long caption.
    pub caption: String,
    /// Short caption (training prepends "a photo of " for EN).
    pub short_caption: String,
    /// Region boxes with captions and optional hard negatives (EN only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bbox_info: Vec<BoxInfo>,
    /// Presence alone marks a Chinese record (FG-CLIP 2); the value is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_cn: Option<serde_json::Value>,
}

/// One box of a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxInfo {
    /// `[x1, y1, x2, y2, (score)]`, normalised to [0, 1]; only the first 4 values are used.
    pub bbox: Vec<f32>,
    pub short_expr: String,
    pub long_expr: String,
    /// 1 when `short_expr_negs` holds hard negatives for `short_expr`.
    #[serde(default)]
    pub flag_short_neg: u8,
    /// The 10 negative captions, key → text, in file order (BTreeMap would reorder: keep insertion order).
    #[serde(default, skip_serializing_if = "NegMap::is_empty")]
    pub short_expr_negs: NegMap,
}

/// Negatives in the order the file lists them (the official code takes the dict's value order); a repeated key
/// keeps its first position and its last value, as a Python dict does.
pub type NegMap = indexmap::IndexMap<String, String>;

/// One FG-OVD benchmark line (docs/data.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FgovdLine {
    /// Image path relative to the image root.
    pub img_path: String,
    /// `[x, y, w, h]` in pixels of the original image.
    pub bbox: [f32; 4],
    /// One positive expression.
    pub pos_expression: Vec<String>,
    /// Up to 10 negatives.
    pub neg_expression: Vec<String>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub test_type: Option<String>,
    /// Any other fields (category ids, image id, ...) are kept as they are.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Language of a record (FG-CLIP 2): `is_cn` present → Chinese (no prefix, no boxes, images under the CN root).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lang {
    En,
    Cn,
}

impl Record {
    /// `"is_cn" in item.keys()`.
    pub fn lang(&self) -> Lang {
        if self.is_cn.is_some() {
            Lang::Cn
        } else {
            Lang::En
        }
    }
}
