//! FineHARD-layout records stored as parquet (what `datasets` / pandas / polars write when the official JSON is
//! re-saved): one row per record with the JSON fields as columns (docs/data.md#finehard-records). `bbox_info` is a list of structs;
//! `short_expr_negs` may be a struct (how Arrow infers the official key → text objects), a map, or a string
//! holding the JSON object. Columns are read in schema order, so negatives keep their file order as in JSON.
//! Other columns are ignored, as unknown JSON fields are. Problems are reported by 1-based row number.

use std::path::Path;

use parquet::file::reader::SerializedFileReader;
use parquet::record::{Field, Row};

use crate::error::{Result, TrainError};
use crate::record::{BoxInfo, NegMap, Record};

/// The rows of a parquet file as records: `(row, Ok(record))`, or `(row, Err(why))` for a row whose columns do
/// not make a record. A file that cannot be read at all (not parquet, corrupt) is an error naming it.
pub fn read_records(path: &Path) -> Result<Vec<(usize, std::result::Result<Record, String>)>> {
    let file = std::fs::File::open(path)
        .map_err(|e| TrainError::File { path: path.to_path_buf(), msg: format!("cannot open: {e}") })?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| TrainError::File { path: path.to_path_buf(), msg: format!("not a readable parquet file: {e}") })?;
    let mut out = Vec::new();
    for (i, row) in reader.into_iter().enumerate() {
        let row = row.map_err(|e| TrainError::Data {
            file: path.to_path_buf(),
            line: i + 1,
            msg: format!("cannot read row: {e}"),
        })?;
        out.push((i + 1, record_from_row(&row)));
    }
    Ok(out)
}

/// One row → one record, with serde's wording for missing fields.
pub fn record_from_row(row: &Row) -> std::result::Result<Record, String> {
    let (mut f_path, mut caption, mut short_caption) = (None, None, None);
    let mut bbox_info = Vec::new();
    let mut is_cn = None;
    for (name, field) in row.get_column_iter() {
        match name.as_str() {
            "f_path" => f_path = text(field, name)?,
            "caption" => caption = text(field, name)?,
            "short_caption" => short_caption = text(field, name)?,
            "bbox_info" => bbox_info = boxes(field)?,
            // Presence alone marks Chinese (`"is_cn" in item`); a null cell is an absent key.
            "is_cn" if !matches!(field, Field::Null) => is_cn = Some(json_scalar(field)),
            _ => {}
        }
    }
    let need = |v: Option<String>, name: &str| v.ok_or_else(|| format!("missing field `{name}`"));
    Ok(Record {
        f_path: need(f_path, "f_path")?,
        caption: need(caption, "caption")?,
        short_caption: need(short_caption, "short_caption")?,
        bbox_info,
        is_cn,
    })
}

/// A string cell (`None` when null, like an absent JSON key).
fn text(f: &Field, what: &str) -> std::result::Result<Option<String>, String> {
    match f {
        Field::Null => Ok(None),
        Field::Str(s) => Ok(Some(s.clone())),
        Field::Bytes(b) => b.as_utf8().map(|s| Some(s.to_string())).map_err(|_| format!("{what}: not UTF-8 text")),
        other => Err(format!("{what}: expected a string, found {}", kind(other))),
    }
}

fn number(f: &Field) -> Option<f64> {
    Some(match *f {
        Field::Byte(v) => v as f64,
        Field::Short(v) => v as f64,
        Field::Int(v) => v as f64,
        Field::Long(v) => v as f64,
        Field::UByte(v) => v as f64,
        Field::UShort(v) => v as f64,
        Field::UInt(v) => v as f64,
        Field::ULong(v) => v as f64,
        Field::Float16(v) => f64::from(v),
        Field::Float(v) => v as f64,
        Field::Double(v) => v,
        Field::Bool(v) => v as u8 as f64,
        _ => return None,
    })
}

fn kind(f: &Field) -> &'static str {
    match f {
        Field::Null => "null",
        Field::Str(_) | Field::Bytes(_) => "a string",
        Field::Group(_) => "a struct",
        Field::ListInternal(_) => "a list",
        Field::MapInternal(_) => "a map",
        f if number(f).is_some() => "a number",
        _ => "another type",
    }
}

fn json_scalar(f: &Field) -> serde_json::Value {
    match f {
        Field::Str(s) => serde_json::Value::String(s.clone()),
        Field::Bool(b) => serde_json::Value::Bool(*b),
        f => number(f)
            .and_then(serde_json::Number::from_f64)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Bool(true)),
    }
}

fn boxes(f: &Field) -> std::result::Result<Vec<BoxInfo>, String> {
    let items = match f {
        Field::Null => return Ok(vec![]),
        Field::ListInternal(l) => l.elements(),
        other => return Err(format!("bbox_info: expected a list of boxes, found {}", kind(other))),
    };
    items
        .iter()
        .enumerate()
        .map(|(k, b)| match b {
            Field::Group(row) => one_box(row).map_err(|e| format!("bbox_info[{k}].{e}")),
            other => Err(format!("bbox_info[{k}]: expected a struct, found {}", kind(other))),
        })
        .collect()
}

fn one_box(row: &Row) -> std::result::Result<BoxInfo, String> {
    let (mut bbox, mut short_expr, mut long_expr) = (None, None, None);
    let mut flag_short_neg = 0u8;
    let mut short_expr_negs = NegMap::new();
    for (name, field) in row.get_column_iter() {
        match name.as_str() {
            "bbox" => bbox = Some(coords(field)?),
            "short_expr" => short_expr = text(field, name)?,
            "long_expr" => long_expr = text(field, name)?,
            "flag_short_neg" => {
                flag_short_neg = match field {
                    Field::Null => 0,
                    f => match number(f) {
                        Some(v) if v == 0.0 || v == 1.0 => v as u8,
                        _ => return Err(format!("flag_short_neg: expected 0 or 1, found {}", kind(f))),
                    },
                }
            }
            "short_expr_negs" => short_expr_negs = negatives(field)?,
            _ => {}
        }
    }
    let need = |v: Option<String>, name: &str| v.ok_or_else(|| format!("{name}: missing"));
    Ok(BoxInfo {
        bbox: bbox.ok_or("bbox: missing")?,
        short_expr: need(short_expr, "short_expr")?,
        long_expr: need(long_expr, "long_expr")?,
        flag_short_neg,
        short_expr_negs,
    })
}

fn coords(f: &Field) -> std::result::Result<Vec<f32>, String> {
    let Field::ListInternal(l) = f else { return Err(format!("bbox: expected a list of numbers, found {}", kind(f))) };
    l.elements()
        .iter()
        .map(|v| number(v).map(|x| x as f32).ok_or_else(|| format!("bbox: expected numbers, found {}", kind(v))))
        .collect()
}

/// `short_expr_negs` as a struct (column order), a map (entry order) or a JSON object in a string (file order).
fn negatives(f: &Field) -> std::result::Result<NegMap, String> {
    let mut out = NegMap::new();
    match f {
        Field::Null => {}
        Field::Group(row) => {
            for (k, v) in row.get_column_iter() {
                // A struct has every key of the whole column; keys this record lacks are null.
                if let Some(v) = text(v, &format!("short_expr_negs.{k}"))? {
                    out.insert(k.clone(), v);
                }
            }
        }
        Field::MapInternal(m) => {
            for (k, v) in m.entries() {
                let key = text(k, "short_expr_negs key")?.unwrap_or_default();
                if let Some(v) = text(v, &format!("short_expr_negs.{key}"))? {
                    out.insert(key, v);
                }
            }
        }
        Field::Str(s) => {
            return serde_json::from_str(s).map_err(|e| format!("short_expr_negs: not a JSON object of captions: {e}"))
        }
        other => return Err(format!("short_expr_negs: expected a struct, map or JSON string, found {}", kind(other))),
    }
    Ok(out)
}
