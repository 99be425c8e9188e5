//! Loading and validating FineHARD / FgGRN training records and FG-OVD lines (the types are in
//! [`crate::record`]), with per-line error reports.

use serde::{Deserialize, Serialize};

pub use crate::record::{BoxInfo, FgovdLine, Lang, NegMap, Record};

// ======================================================================================== loading and validation
//
// Mirrors `LazySupervisedBboxDataset.__init__` of both official trainers (a `.json`/`.jsonl` file read with
// `json.load`, a `.txt` list of such files, or a folder: all `*.json`, then all `*.jsonl`; FG-CLIP 2 appends the
// `*.json` files of `--cn_pair_root`). Unlike the official code, which crashes on the first bad record in the
// middle of an epoch (`KeyError`, `ValueError("Box coordinates are invalid.")`), every record is checked up front
// and a bad one is either reported and dropped ([`Policy::Skip`]) or rejected with its file and line
// ([`Policy::Reject`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Result, TrainError};

/// Slack allowed outside [0, 1] for box coordinates (detector outputs are rounded, e.g. 1.0001).
pub const BOX_COORD_EPS: f32 = 1e-3;
/// Negatives a hard box must have (`flag_short_neg == 1`): the batch layout pairs each hard box with 1 + 10 texts.
pub const HARD_NEGATIVES: usize = 10;
/// The prefix FG-CLIP's trainer removes from `f_path` (`image_path.replace("grit-20m/data-12m/", "")`).
pub const FGCLIP_V1_PATH_REMOVE: &str = "grit-20m/data-12m/";

/// What to do with a bad record, box or image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Report it (a [`DataIssue`]) and go on without it: a bad record is dropped, a bad box only drops that box,
    /// an unreadable image becomes a black image (as the official FG-CLIP 2 collator does).
    #[default]
    Skip,
    /// Stop with an error naming the first problem (`file:line: what`).
    Reject,
}

impl std::str::FromStr for Policy {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "skip" => Ok(Policy::Skip),
            "reject" => Ok(Policy::Reject),
            _ => Err(TrainError::Config(format!("unknown data policy {s:?} (expected \"skip\" or \"reject\")"))),
        }
    }
}

/// One problem found in the data: the file, the 1-based line (for a JSON array: the line where the record
/// starts; for JSON lines: its line) and what is wrong, incl. what was done about it under [`Policy::Skip`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataIssue {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for DataIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

impl DataIssue {
    /// The same problem as a [`TrainError::Data`].
    pub fn to_error(&self) -> TrainError {
        TrainError::Data { file: self.file.clone(), line: self.line, msg: self.message.clone() }
    }
}

/// A validated record and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub record: Record,
    pub file: Arc<Path>,
    /// 1-based line where the record starts.
    pub line: usize,
}

impl Item {
    pub fn lang(&self) -> Lang {
        self.record.lang()
    }
    /// A [`DataIssue`] about this record.
    pub fn issue(&self, message: impl Into<String>) -> DataIssue {
        DataIssue { file: self.file.to_path_buf(), line: self.line, message: message.into() }
    }
}

/// Where images are: the EN root, the CN root (FG-CLIP 2), and the part of `f_path` to remove (FG-CLIP:
/// [`FGCLIP_V1_PATH_REMOVE`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageRoots {
    pub en: PathBuf,
    pub cn: Option<PathBuf>,
    pub f_path_remove: Option<String>,
}

impl ImageRoots {
    pub fn new(en: impl Into<PathBuf>) -> Self {
        Self { en: en.into(), cn: None, f_path_remove: None }
    }

    /// The image file of a record (`os.path.join(root, f_path)`); `None` for a Chinese record without a CN root.
    pub fn image_path(&self, record: &Record) -> Option<PathBuf> {
        let root = match record.lang() {
            Lang::En => &self.en,
            Lang::Cn => self.cn.as_ref()?,
        };
        let rel = match &self.f_path_remove {
            Some(s) if !s.is_empty() => record.f_path.replace(s.as_str(), ""),
            _ => record.f_path.clone(),
        };
        Some(root.join(rel))
    }
}

/// How to read record files.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    pub policy: Policy,
    /// Also check that each record's image file exists (a `stat` per record; slow on network file systems).
    pub check_images: Option<ImageRoots>,
}

/// Reads one record file, a folder of them (`*.json`, `*.jsonl`, then `*.parquet`, each sorted by name) or a
/// `.txt` list of files. A file is a JSON array (the official format, even when named `.jsonl`) or JSON lines
/// (one object per line), told apart by its first non-blank character, or parquet ([`crate::parquet`]). Returns the kept records and the problems found.
pub fn load_records(path: &Path, policy: Policy) -> Result<(Vec<Record>, Vec<DataIssue>)> {
    let (items, issues) = load_items(path, &ReadOptions { policy, check_images: None })?;
    Ok((items.into_iter().map(|it| it.record).collect(), issues))
}

/// [`load_records`] keeping each record's file and line, with optional image checks.
pub fn load_items(path: &Path, opts: &ReadOptions) -> Result<(Vec<Item>, Vec<DataIssue>)> {
    let mut items = Vec::new();
    let mut issues = Vec::new();
    for file in record_files(path)? {
        read_file(&file, opts, &mut items, &mut issues)?;
    }
    Ok((items, issues))
}

/// The record files `path` names (see [`load_records`]).
pub fn record_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path)
        .map_err(|e| TrainError::File { path: path.to_path_buf(), msg: format!("cannot open data path: {e}") })?;
    if meta.is_dir() {
        let mut json = Vec::new();
        let mut jsonl = Vec::new();
        let mut parquet = Vec::new();
        let rd = std::fs::read_dir(path)
            .map_err(|e| TrainError::File { path: path.to_path_buf(), msg: format!("cannot list folder: {e}") })?;
        for entry in rd {
            let p = entry.map_err(|e| TrainError::File { path: path.to_path_buf(), msg: e.to_string() })?.path();
            // glob('*.json') skips hidden files; so do we.
            let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            if hidden || !p.is_file() {
                continue;
            }
            match p.extension().and_then(|e| e.to_str()) {
                Some("json") => json.push(p),
                Some("jsonl") => jsonl.push(p),
                _ if is_parquet(&p) => parquet.push(p),
                _ => {}
            }
        }
        // glob order is the OS's; sorted names make the dataset order (and so every batch) reproducible.
        json.sort();
        jsonl.sort();
        parquet.sort();
        json.extend(jsonl);
        json.extend(parquet);
        if json.is_empty() {
            return Err(TrainError::File {
                path: path.to_path_buf(),
                msg: "folder holds no .json / .jsonl / .parquet files".into(),
            });
        }
        return Ok(json);
    }
    if path.extension().and_then(|e| e.to_str()) == Some("txt") {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TrainError::File { path: path.to_path_buf(), msg: format!("cannot read file list: {e}") })?;
        let base = path.parent().unwrap_or(Path::new(""));
        let mut files = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let name = line.trim_end();
            if name.is_empty() {
                continue;
            }
            let p = PathBuf::from(name);
            // As listed (relative to the working directory, like the official code), else next to the list.
            let p = if p.is_absolute() || p.exists() { p } else { base.join(p) };
            if !p.is_file() {
                return Err(TrainError::Data {
                    file: path.to_path_buf(),
                    line: i + 1,
                    msg: format!("listed record file {} does not exist", p.display()),
                });
            }
            files.push(p);
        }
        return Ok(files);
    }
    Ok(vec![path.to_path_buf()])
}

/// Collects problems: under `Reject` the first one becomes the error.
struct Reporter<'a> {
    file: &'a Path,
    policy: Policy,
    issues: &'a mut Vec<DataIssue>,
}

impl Reporter<'_> {
    fn report(&mut self, line: usize, msg: String, skip_action: &str) -> Result<()> {
        match self.policy {
            Policy::Reject => Err(TrainError::Data { file: self.file.to_path_buf(), line, msg }),
            Policy::Skip => {
                let message = if skip_action.is_empty() { msg } else { format!("{msg} ({skip_action})") };
                self.issues.push(DataIssue { file: self.file.to_path_buf(), line, message });
                Ok(())
            }
        }
    }
}

/// Validates a parsed record (and with `check_images`, its image) and keeps it, or reports why not.
fn accept(
    record: Record,
    line: usize,
    file: &Arc<Path>,
    opts: &ReadOptions,
    rep: &mut Reporter,
    items: &mut Vec<Item>,
) -> Result<()> {
    let Some(record) = validate(record, line, rep)? else { return Ok(()) };
    if let Some(roots) = &opts.check_images {
        match roots.image_path(&record) {
            None => return rep.report(line, "Chinese record but no CN image root given".into(), "record dropped"),
            Some(p) if !p.is_file() => {
                return rep.report(line, format!("image not found: {}", p.display()), "record dropped")
            }
            Some(_) => {}
        }
    }
    items.push(Item { record, file: file.clone(), line });
    Ok(())
}

/// A parquet record file: rows instead of lines (`DataIssue::line` is the 1-based row).
fn read_parquet(path: &Path, opts: &ReadOptions, items: &mut Vec<Item>, issues: &mut Vec<DataIssue>) -> Result<()> {
    let file: Arc<Path> = Arc::from(path);
    let mut rep = Reporter { file: path, policy: opts.policy, issues };
    for (row, record) in crate::parquet::read_records(path)? {
        match record {
            Ok(record) => accept(record, row, &file, opts, &mut rep, items)?,
            Err(msg) => rep.report(row, format!("row {row}: {msg}"), "record dropped")?,
        }
    }
    Ok(())
}

fn is_parquet(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

fn read_file(path: &Path, opts: &ReadOptions, items: &mut Vec<Item>, issues: &mut Vec<DataIssue>) -> Result<()> {
    if is_parquet(path) {
        return read_parquet(path, opts, items, issues);
    }
    let bytes = std::fs::read(path)
        .map_err(|e| TrainError::File { path: path.to_path_buf(), msg: format!("cannot read: {e}") })?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(e) => {
            let line = 1 + bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count();
            return Err(TrainError::Data { file: path.to_path_buf(), line, msg: "not valid UTF-8".into() });
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let file: Arc<Path> = Arc::from(path);
    let mut rep = Reporter { file: path, policy: opts.policy, issues };
    let Some(first) = text.find(|c: char| !c.is_whitespace()) else {
        return Ok(()); // an empty file holds no records
    };
    let mut lines = LineCounter::new(text);
    let mut accept = |rep: &mut Reporter, slice: &str, line: usize| -> Result<()> {
        match parse_record(slice, line, rep)? {
            Some(record) => accept(record, line, &file, opts, rep, items),
            None => Ok(()),
        }
    };
    match text.as_bytes()[first] {
        b'[' => {
            let scan = scan_array(text, first);
            for (start, end) in scan.elements {
                let line = lines.line_of(start);
                accept(&mut rep, &text[start..end], line)?;
            }
            if let Some((at, msg)) = scan.problem {
                let line = lines.line_of(at);
                rep.report(line, msg, "")?;
            }
        }
        b'{' => {
            for (i, l) in text.lines().enumerate() {
                if l.trim().is_empty() {
                    continue;
                }
                accept(&mut rep, l, i + 1)?;
            }
        }
        _ => {
            let line = lines.line_of(first);
            return Err(TrainError::Data {
                file: path.to_path_buf(),
                line,
                msg: "expected a JSON array of records or JSON lines (one object per line)".into(),
            });
        }
    }
    Ok(())
}

/// Byte offset → 1-based line, for increasing offsets (one pass over the text in total).
struct LineCounter<'a> {
    text: &'a [u8],
    pos: usize,
    line: usize,
}

impl<'a> LineCounter<'a> {
    fn new(text: &'a str) -> Self {
        Self { text: text.as_bytes(), pos: 0, line: 1 }
    }
    fn line_of(&mut self, offset: usize) -> usize {
        if offset < self.pos {
            // Not expected (offsets increase); recount from the start.
            self.pos = 0;
            self.line = 1;
        }
        self.line += self.text[self.pos..offset].iter().filter(|&&b| b == b'\n').count();
        self.pos = offset;
        self.line
    }
}

struct ArrayScan {
    /// Byte ranges of the top-level elements.
    elements: Vec<(usize, usize)>,
    /// A structural problem of the array itself (offset, message).
    problem: Option<(usize, String)>,
}

/// Splits a top-level JSON array into its elements without parsing them, so each record is parsed (and reported)
/// on its own and one broken record does not lose the whole file.
fn scan_array(text: &str, open: usize) -> ArrayScan {
    let b = text.as_bytes();
    let n = b.len();
    let mut elements = Vec::new();
    let skip_ws = |mut i: usize| {
        while i < n && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut i = skip_ws(open + 1);
    if i < n && b[i] == b']' {
        return finish(text, i, elements);
    }
    loop {
        i = skip_ws(i);
        if i >= n {
            return ArrayScan { elements, problem: Some((n, "file ends inside the array (missing `]`)".into())) };
        }
        if b[i] == b']' || b[i] == b',' {
            return ArrayScan { elements, problem: Some((i, "empty array element (stray comma?)".into())) };
        }
        let start = i;
        let (mut depth, mut in_str) = (0usize, false);
        while i < n {
            let c = b[i];
            if in_str {
                match c {
                    b'\\' => i += 1,
                    b'"' => in_str = false,
                    _ => {}
                }
            } else {
                match c {
                    b'"' => in_str = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => depth -= 1,
                    b']' | b',' if depth == 0 => break,
                    b'}' => {
                        return ArrayScan { elements, problem: Some((i, "unbalanced `}` in the array".into())) };
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        let mut end = i.min(n);
        while end > start && b[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
        elements.push((start, end));
        if i >= n {
            return ArrayScan { elements, problem: Some((n, "file ends inside the array (missing `]`)".into())) };
        }
        if b[i] == b']' {
            return finish(text, i, elements);
        }
        i += 1; // the comma
    }
}

fn finish(text: &str, close: usize, elements: Vec<(usize, usize)>) -> ArrayScan {
    let rest = &text[close + 1..];
    let problem = rest
        .find(|c: char| !c.is_whitespace())
        .map(|k| (close + 1 + k, "unexpected content after the array".to_string()));
    ArrayScan { elements, problem }
}

/// A serde_json error's message without its position (which is relative to the record's slice), plus the
/// absolute position.
fn json_err(e: &serde_json::Error, base_line: usize) -> String {
    let s = e.to_string();
    let msg = match s.rfind(" at line ") {
        Some(k) if e.line() > 0 => &s[..k],
        _ => s.as_str(),
    };
    if e.line() > 0 {
        format!("{msg} (at line {} column {})", base_line + e.line() - 1, e.column())
    } else {
        msg.to_string()
    }
}

/// One record from its JSON text. A malformed box only loses that box; anything else loses the record.
fn parse_record(slice: &str, line: usize, rep: &mut Reporter) -> Result<Option<Record>> {
    match serde_json::from_str::<Record>(slice) {
        Ok(mut r) => {
            // `is_cn: null` still marks a Chinese record (`"is_cn" in item.keys()`), but serde reads it as None.
            if r.is_cn.is_none() && slice.contains("\"is_cn\"") {
                if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(slice) {
                    if m.contains_key("is_cn") {
                        r.is_cn = Some(serde_json::Value::Null);
                    }
                }
            }
            Ok(Some(r))
        }
        Err(first) => {
            // Python's json writes and reads NaN / Infinity (and reads 1e999 as inf); serde_json does not. Quote
            // them so the record parses and the box that holds them is reported as non-finite.
            let quoted = quote_nonfinite(slice);
            let value = match &quoted {
                Some(q) => serde_json::from_str::<serde_json::Value>(q),
                None => serde_json::from_str::<serde_json::Value>(slice),
            };
            let mut obj = match value {
                Ok(serde_json::Value::Object(m)) => m,
                Ok(_) => {
                    rep.report(line, "record is not a JSON object".into(), "record dropped")?;
                    return Ok(None);
                }
                Err(e) => {
                    rep.report(line, format!("malformed JSON: {}", json_err(&e, line)), "record dropped")?;
                    return Ok(None);
                }
            };
            let boxes = obj.remove("bbox_info");
            let has_cn = obj.contains_key("is_cn");
            let mut rec: Record = match serde_json::from_value(serde_json::Value::Object(obj)) {
                Ok(r) => r,
                Err(e) => {
                    rep.report(line, format!("invalid record: {}", json_err(&e, line)), "record dropped")?;
                    return Ok(None);
                }
            };
            if has_cn && rec.is_cn.is_none() {
                rec.is_cn = Some(serde_json::Value::Null);
            }
            let mut bad_boxes = 0;
            match boxes {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::Array(list)) => {
                    for (k, mut b) in list.into_iter().enumerate() {
                        if let Some(p) = nonfinite_bbox(&mut b) {
                            bad_boxes += 1;
                            rep.report(line, format!("bbox_info[{k}]: {p}"), "box dropped")?;
                            continue;
                        }
                        match serde_json::from_value::<BoxInfo>(b) {
                            Ok(b) => rec.bbox_info.push(b),
                            Err(e) => {
                                bad_boxes += 1;
                                rep.report(line, format!("bbox_info[{k}]: {e}"), "box dropped")?
                            }
                        }
                    }
                }
                Some(_) => {
                    rep.report(line, "bbox_info is not a list".into(), "record dropped")?;
                    return Ok(None);
                }
            }
            if bad_boxes == 0 && quoted.is_none() {
                // The typed parse failed for a reason the piecewise one does not see (e.g. a duplicate key).
                rep.report(line, format!("invalid record: {}", json_err(&first, line)), "record dropped")?;
                return Ok(None);
            }
            Ok(Some(rec))
        }
    }
}

/// `slice` with every non-finite number literal (`NaN`, `Infinity`, `-Infinity`, an overflowing `1e999`) outside
/// strings turned into a JSON string; `None` when there is none.
fn quote_nonfinite(slice: &str) -> Option<String> {
    let b = slice.as_bytes();
    let mut out = String::with_capacity(slice.len() + 16);
    let (mut i, mut last, mut in_str, mut changed) = (0, 0, false, false);
    while i < b.len() {
        let c = b[i];
        if in_str {
            match c {
                b'\\' => i += 1,
                b'"' => in_str = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_str = true;
            i += 1;
            continue;
        }
        if c == b'-' || c == b'N' || c == b'I' || c.is_ascii_digit() {
            let start = i;
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || matches!(b[j], b'.' | b'+' | b'-')) {
                j += 1;
            }
            let tok = &slice[start..j];
            let nonfinite = matches!(tok, "NaN" | "Infinity" | "-Infinity")
                || (tok.bytes().any(|x| x.is_ascii_digit()) && tok.parse::<f64>().is_ok_and(|v| v.is_infinite()));
            if nonfinite {
                out.push_str(&slice[last..start]);
                out.push('"');
                out.push_str(tok);
                out.push('"');
                last = j;
                changed = true;
            }
            i = j;
            continue;
        }
        i += 1;
    }
    changed.then(|| {
        out.push_str(&slice[last..]);
        out
    })
}

/// A box whose first 4 coordinates hold a quoted non-finite literal (see [`quote_nonfinite`]) is reported; one
/// in the unused 5th value (the detector score) is replaced by 0.
fn nonfinite_bbox(b: &mut serde_json::Value) -> Option<String> {
    let coords = b.get_mut("bbox")?.as_array_mut()?;
    let bad = |v: &serde_json::Value| v.as_str().is_some_and(|s| s.parse::<f64>().is_ok_and(|x| !x.is_finite()));
    if let Some(k) = coords.iter().take(4).position(bad) {
        let v = coords[k].as_str().unwrap_or_default().to_string();
        return Some(format!("bbox has a non-finite value ({v} at index {k})"));
    }
    for v in coords.iter_mut().skip(4) {
        if bad(v) {
            *v = serde_json::Value::from(0.0);
        }
    }
    None
}

/// Why a box cannot be used, if it cannot.
pub fn box_problem(b: &BoxInfo) -> Option<String> {
    if b.bbox.len() < 4 {
        return Some(format!("bbox has {} values, expected 4 (x1, y1, x2, y2)", b.bbox.len()));
    }
    let c = &b.bbox[..4];
    if c.iter().any(|v| !v.is_finite()) {
        return Some(format!("bbox {c:?} has a non-finite value"));
    }
    if c.iter().any(|&v| !(-BOX_COORD_EPS..=1.0 + BOX_COORD_EPS).contains(&v)) {
        return Some(format!("bbox {c:?} is outside [0, 1] (coordinates must be normalised)"));
    }
    if c[0] > c[2] || c[1] > c[3] {
        return Some(format!("bbox {c:?} has x1 > x2 or y1 > y2"));
    }
    if b.short_expr.trim().is_empty() {
        return Some("empty short_expr".into());
    }
    if b.long_expr.trim().is_empty() {
        return Some("empty long_expr".into());
    }
    if b.flag_short_neg == 1 {
        if b.short_expr_negs.len() != HARD_NEGATIVES {
            return Some(format!(
                "flag_short_neg = 1 with {} negatives in short_expr_negs (expected {HARD_NEGATIVES})",
                b.short_expr_negs.len()
            ));
        }
        if b.short_expr_negs.values().any(|v| v.trim().is_empty()) {
            return Some("empty negative caption in short_expr_negs".into());
        }
    }
    None
}

/// Why a record cannot be used at all, if it cannot (its boxes aside).
pub fn record_problem(r: &Record) -> Option<String> {
    if r.f_path.trim().is_empty() {
        return Some("empty f_path".into());
    }
    if r.caption.trim().is_empty() {
        return Some("empty caption".into());
    }
    if r.short_caption.trim().is_empty() {
        return Some("empty short_caption".into());
    }
    None
}

fn validate(mut r: Record, line: usize, rep: &mut Reporter) -> Result<Option<Record>> {
    if let Some(p) = record_problem(&r) {
        rep.report(line, p, "record dropped")?;
        return Ok(None);
    }
    // Chinese records' boxes are never read (official: valid_num = 0), so they are not checked.
    if r.lang() == Lang::En && !r.bbox_info.is_empty() {
        let mut kept = Vec::with_capacity(r.bbox_info.len());
        for (k, b) in std::mem::take(&mut r.bbox_info).into_iter().enumerate() {
            match box_problem(&b) {
                None => kept.push(b),
                Some(p) => rep.report(line, format!("bbox_info[{k}]: {p}"), "box dropped")?,
            }
        }
        r.bbox_info = kept;
    }
    Ok(Some(r))
}

// ============================================================================================== the dataset

/// What to train on (FG-CLIP 2 bilingual: EN files then CN files, as the official dataset concatenates them).
#[derive(Debug, Clone, Default)]
pub struct DataSpec {
    /// EN record files, folders or `.txt` lists.
    pub en: Vec<PathBuf>,
    /// CN record files / folders (FG-CLIP 2 `--cn_pair_root`).
    pub cn: Vec<PathBuf>,
    pub roots: ImageRoots,
    pub policy: Policy,
    /// Check at load time that every image file exists.
    pub check_images: bool,
}

/// The training records, in dataset order, with the image roots.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub items: Vec<Item>,
    pub roots: ImageRoots,
    /// Problems found while loading (empty under [`Policy::Reject`], which errors instead).
    pub issues: Vec<DataIssue>,
}

impl Dataset {
    /// Loads and validates every file of `spec`.
    pub fn load(spec: &DataSpec) -> Result<Self> {
        let opts = ReadOptions { policy: spec.policy, check_images: spec.check_images.then(|| spec.roots.clone()) };
        let mut items = Vec::new();
        let mut issues = Vec::new();
        for p in spec.en.iter().chain(&spec.cn) {
            let (i, s) = load_items(p, &opts)?;
            items.extend(i);
            issues.extend(s);
        }
        let ds = Dataset { items, roots: spec.roots.clone(), issues };
        ds.check_roots()?;
        Ok(ds)
    }

    /// A dataset from records in memory (synthetic data, tests); file `<memory>`, line = index + 1. The records
    /// are validated like loaded ones; the first bad one is an error.
    pub fn from_records(records: Vec<Record>, roots: ImageRoots) -> Result<Self> {
        let file: Arc<Path> = Arc::from(Path::new("<memory>"));
        for (i, r) in records.iter().enumerate() {
            let boxes = if r.lang() == Lang::En { &r.bbox_info[..] } else { &[] };
            let problem = record_problem(r).or_else(|| {
                boxes.iter().enumerate().find_map(|(k, b)| box_problem(b).map(|p| format!("bbox_info[{k}]: {p}")))
            });
            if let Some(msg) = problem {
                return Err(TrainError::Data { file: file.to_path_buf(), line: i + 1, msg });
            }
        }
        let items = records
            .into_iter()
            .enumerate()
            .map(|(i, record)| Item { record, file: file.clone(), line: i + 1 })
            .collect();
        let ds = Dataset { items, roots, issues: Vec::new() };
        ds.check_roots()?;
        Ok(ds)
    }

    fn check_roots(&self) -> Result<()> {
        if self.roots.cn.is_none() {
            if let Some(it) = self.items.iter().find(|it| it.lang() == Lang::Cn) {
                return Err(TrainError::Data {
                    file: it.file.to_path_buf(),
                    line: it.line,
                    msg: "Chinese record (is_cn) but no CN image root is configured".into(),
                });
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The image file of item `i`.
    pub fn image_path(&self, i: usize) -> PathBuf {
        // check_roots guarantees a CN root whenever there are CN items.
        self.roots.image_path(&self.items[i].record).unwrap_or_default()
    }

    /// Language of every item, in order (the official `modality_lengths` tags: EN = 1, CN = 0).
    pub fn langs(&self) -> Vec<Lang> {
        self.items.iter().map(Item::lang).collect()
    }
}
