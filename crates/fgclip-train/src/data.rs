//! FineHARD / FgGRN training records (spec §6.1) and FG-OVD evaluation lines (spec §6.2), as serde types.
//! Loading, validation and per-line error reports live below the types.

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

/// Negatives in the order the file lists them (the official code takes the dict's value order).
pub type NegMap = indexmap_lite::OrderedMap;

/// One FG-OVD benchmark line (spec §6.2).
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

/// A tiny insertion-ordered string map, so negatives keep their file order without another dependency.
pub mod indexmap_lite {
    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct OrderedMap(pub Vec<(String, String)>);

    impl OrderedMap {
        pub fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
        pub fn len(&self) -> usize {
            self.0.len()
        }
        /// The values in file order.
        pub fn values(&self) -> impl Iterator<Item = &str> {
            self.0.iter().map(|(_, v)| v.as_str())
        }
    }

    impl Serialize for OrderedMap {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(self.0.len()))?;
            for (k, v) in &self.0 {
                m.serialize_entry(k, v)?;
            }
            m.end()
        }
    }

    impl<'de> Deserialize<'de> for OrderedMap {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = OrderedMap;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object of negative captions")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<OrderedMap, A::Error> {
                    let mut out = Vec::new();
                    while let Some((k, v)) = a.next_entry::<String, String>()? {
                        out.push((k, v));
                    }
                    Ok(OrderedMap(out))
                }
            }
            d.deserialize_map(V)
        }
    }
}
