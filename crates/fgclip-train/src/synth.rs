//! A synthetic fine-grained dataset in the FineHARD layout (docs/data.md#finehard-records) plus an FG-OVD-style held-out file
//! (docs/data.md#fg-ovd-files), rendered here without any download. It stands in for FineHARD (`data/get_data.sh` of the
//! official repo) so that training and `eval-fgovd` can run anywhere; there is no official counterpart.
//!
//! Each image shows 2–4 non-overlapping shapes on a plain or noisy grey background. An object is described by
//! four attributes — size, colour, texture, shape ("large red striped circle") — and its position. Every box
//! gets 10 hard negatives, each the positive with exactly ONE attribute swapped, none of which describes any
//! object of the same image. Everything is a pure function of the seed: one RNG stream per image, derived
//! from (seed, split, index), so the images can be rendered in parallel and the output bytes do not depend
//! on the thread count.
//!
//! Layout written under the output folder:
//! `images/{train,test}_NNNNNN.png`, `train.json` and `test.json` (JSON arrays of [`Record`]),
//! `test_fgovd.jsonl` (one [`FgovdLine`] per held-out box) and `synth.json` ([`SynthSummary`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::record::{BoxInfo, FgovdLine, NegMap, Record};

/// Sizes, in the order of [`Attributes::size`].
pub const SIZES: [&str; 2] = ["small", "large"];
/// Colour names and their base RGB, in the order of [`Attributes::colour`]. Chosen far apart in hue or
/// lightness so that a tiny model can tell them apart on a grey background.
pub const COLOURS: [(&str, [u8; 3]); 8] = [
    ("red", [215, 35, 35]),
    ("green", [40, 165, 60]),
    ("blue", [40, 80, 215]),
    ("yellow", [235, 215, 40]),
    ("purple", [135, 55, 175]),
    ("orange", [240, 135, 25]),
    ("white", [240, 240, 240]),
    ("black", [25, 25, 25]),
];
/// Textures, in the order of [`Attributes::texture`].
pub const TEXTURES: [&str; 3] = ["solid", "striped", "dotted"];
/// Shapes, in the order of [`Attributes::shape`].
pub const SHAPES: [&str; 6] = ["circle", "square", "triangle", "cross", "ring", "diamond"];

/// Hard negatives per box, as FineHARD has.
pub const NEGATIVES_PER_BOX: usize = 10;
/// `test_type` of the generated FG-OVD lines.
pub const TEST_TYPE: &str = "synthetic_attributes";
/// Most objects per image: the official collators keep 4 box slots per sample.
pub const MAX_OBJECTS: usize = crate::batch::BOX_SLOTS;

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("synth config: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot encode PNG: {msg}")]
    Png { path: PathBuf, msg: String },
    #[error("output folder {0} is not empty (pass overwrite to write into it)")]
    NotEmpty(PathBuf),
    #[error("internal error: {0}")]
    Internal(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SynthError + '_ {
    move |source| SynthError::Io { path: path.to_path_buf(), source }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// Training images.
    pub train: usize,
    /// Held-out images (never shared with the training split).
    pub test: usize,
    /// Side of the square images in pixels (32..=1024).
    pub size: u32,
    pub seed: u64,
    /// Objects per image, drawn uniformly in `min_objects..=max_objects` (1..=4).
    pub min_objects: usize,
    pub max_objects: usize,
    /// Write into a non-empty folder (old `train_*/test_*` PNGs there are removed first).
    #[serde(skip)]
    pub overwrite: bool,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self { train: 2000, test: 200, size: 128, seed: 0, min_objects: 2, max_objects: 4, overwrite: false }
    }
}

impl SynthConfig {
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |m: String| Err(SynthError::Config(m));
        if self.train + self.test == 0 {
            return bad("train and test are both 0: nothing to generate".into());
        }
        if !(32..=1024).contains(&self.size) {
            return bad(format!("size {} is outside 32..=1024 pixels", self.size));
        }
        if self.min_objects == 0 || self.min_objects > self.max_objects || self.max_objects > MAX_OBJECTS {
            return bad(format!(
                "objects per image {}..={} must satisfy 1 <= min <= max <= {MAX_OBJECTS}",
                self.min_objects, self.max_objects
            ));
        }
        if self.train > 999_999 || self.test > 999_999 {
            return bad("at most 999999 images per split".into());
        }
        Ok(())
    }
}

/// Counts and vocabulary of a generated dataset; also written as `synth.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthSummary {
    pub format: String,
    pub config: SynthConfig,
    pub train_images: usize,
    pub test_images: usize,
    pub train_boxes: usize,
    /// Also the number of lines of `test_fgovd.jsonl`.
    pub test_boxes: usize,
    pub negatives_per_box: usize,
    pub sizes: Vec<String>,
    pub colours: Vec<String>,
    pub textures: Vec<String>,
    pub shapes: Vec<String>,
    /// File names relative to the output folder.
    pub files: BTreeMap<String, String>,
}

/// The four attributes of an object, as indices into [`SIZES`], [`COLOURS`], [`TEXTURES`], [`SHAPES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attributes {
    pub size: usize,
    pub colour: usize,
    pub texture: usize,
    pub shape: usize,
}

/// Which attribute a negative swaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttributeKind {
    Size,
    Colour,
    Texture,
    Shape,
}

impl AttributeKind {
    pub fn name(self) -> &'static str {
        match self {
            AttributeKind::Size => "size",
            AttributeKind::Colour => "colour",
            AttributeKind::Texture => "texture",
            AttributeKind::Shape => "shape",
        }
    }
}

impl Attributes {
    /// "large red striped circle": size, colour, texture, shape.
    pub fn describe(&self) -> String {
        format!("{} {} {} {}", SIZES[self.size], COLOURS[self.colour].0, TEXTURES[self.texture], SHAPES[self.shape])
    }

    /// Inverse of [`Attributes::describe`]; `None` for any other text.
    pub fn parse(text: &str) -> Option<Attributes> {
        let w: Vec<&str> = text.split_whitespace().collect();
        let [s, c, t, h] = w.as_slice() else { return None };
        Some(Attributes {
            size: SIZES.iter().position(|x| x == s)?,
            colour: COLOURS.iter().position(|x| x.0 == *c)?,
            texture: TEXTURES.iter().position(|x| x == t)?,
            shape: SHAPES.iter().position(|x| x == h)?,
        })
    }

    /// The attributes in which `self` and `other` differ.
    pub fn differences(&self, other: &Attributes) -> Vec<AttributeKind> {
        let mut d = vec![];
        if self.size != other.size {
            d.push(AttributeKind::Size);
        }
        if self.colour != other.colour {
            d.push(AttributeKind::Colour);
        }
        if self.texture != other.texture {
            d.push(AttributeKind::Texture);
        }
        if self.shape != other.shape {
            d.push(AttributeKind::Shape);
        }
        d
    }

    /// Every description that differs from `self` in exactly one attribute (1 + 7 + 2 + 5 = 15).
    pub fn single_swaps(&self) -> Vec<(AttributeKind, Attributes)> {
        let mut out = vec![];
        for v in 0..SIZES.len() {
            if v != self.size {
                out.push((AttributeKind::Size, Attributes { size: v, ..*self }));
            }
        }
        for v in 0..COLOURS.len() {
            if v != self.colour {
                out.push((AttributeKind::Colour, Attributes { colour: v, ..*self }));
            }
        }
        for v in 0..TEXTURES.len() {
            if v != self.texture {
                out.push((AttributeKind::Texture, Attributes { texture: v, ..*self }));
            }
        }
        for v in 0..SHAPES.len() {
            if v != self.shape {
                out.push((AttributeKind::Shape, Attributes { shape: v, ..*self }));
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------- RNG

/// SplitMix64: tiny, seedable, and its output is fixed by its definition (no dependency whose stream could
/// change between versions and silently change the dataset).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// The stream of one image: independent of every other image's.
fn image_rng(seed: u64, split: u64, index: usize) -> Rng {
    let mut r = Rng::new(seed ^ 0x5EED_F6C1_1B00_0000);
    let a = r.next_u64();
    let mut r =
        Rng::new(a ^ split.wrapping_mul(0xA24B_AED4_963E_E407) ^ (index as u64).wrapping_mul(0x9FB2_1C65_1E98_DF25));
    r.next_u64();
    r
}

// ---------------------------------------------------------------------------------------------- scenes

/// One drawn object.
#[derive(Debug, Clone)]
pub struct SceneObject {
    pub attrs: Attributes,
    /// Tight box of the drawn pixels, `[x1, y1, x2, y2)` in pixels (x2, y2 exclusive).
    pub bbox_px: [u32; 4],
    /// Centre of the object's footprint in pixels.
    pub centre: (f32, f32),
    /// The 10 negatives and the attribute each swaps.
    pub negatives: Vec<(AttributeKind, Attributes)>,
}

/// One rendered image with its objects.
#[derive(Debug, Clone)]
pub struct Scene {
    pub image: image::RgbImage,
    pub objects: Vec<SceneObject>,
    pub noisy: bool,
}

/// Footprint square of an object: centre and half side.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    cx: f32,
    cy: f32,
    r: f32,
}

fn overlaps(a: &Footprint, b: &Footprint, gap: f32) -> bool {
    (a.cx - b.cx).abs() < a.r + b.r + gap && (a.cy - b.cy).abs() < a.r + b.r + gap
}

/// Inside test of a shape in footprint coordinates u, v ∈ [-1, 1].
fn inside(shape: usize, u: f32, v: f32) -> bool {
    match SHAPES[shape] {
        "circle" => u * u + v * v <= 1.0,
        "square" => u.abs() <= 0.85 && v.abs() <= 0.85,
        // Apex up at v = -0.9, base at v = 0.85 with half width 0.95.
        "triangle" => (-0.9..=0.85).contains(&v) && u.abs() <= (v + 0.9) / 1.75 * 0.95,
        "cross" => (u.abs() <= 0.3 && v.abs() <= 0.95) || (v.abs() <= 0.3 && u.abs() <= 0.95),
        "ring" => {
            let d = u * u + v * v;
            (0.3025..=1.0).contains(&d)
        }
        "diamond" => u.abs() + v.abs() <= 1.0,
        _ => false,
    }
}

/// Texture marks in a contrasting shade of the object's colour: darker for light colours, lighter for dark
/// ones, so the colour name still fits the object. The factors keep every mark (like every fill) at least
/// ~30 levels away from any background grey in some channel, so marks never read as holes.
fn mark_colour(c: [u8; 3]) -> [u8; 3] {
    let lum = 0.299 * c[0] as f32 + 0.587 * c[1] as f32 + 0.114 * c[2] as f32;
    if lum > 100.0 {
        c.map(|x| (x as f32 * 0.25) as u8)
    } else {
        c.map(|x| (x as f32 + (255.0 - x as f32) * 0.75) as u8)
    }
}

fn is_mark(texture: usize, dx: f32, dy: f32, side: f32) -> bool {
    match TEXTURES[texture] {
        "striped" => {
            // Diagonal stripes, ~5.5 periods across the footprint, marks 40% of each period.
            let period = (side / 5.5).max(4.0);
            ((dx + dy) / period).rem_euclid(1.0) < 0.4
        }
        "dotted" => {
            let cell = (side / 5.0).max(4.0);
            let (fx, fy) = ((dx / cell).rem_euclid(1.0) - 0.5, (dy / cell).rem_euclid(1.0) - 0.5);
            (fx * fx + fy * fy).sqrt() * cell <= (cell * 0.25).max(1.0)
        }
        _ => false,
    }
}

/// Renders one scene from its own RNG stream.
fn render_scene(cfg: &SynthConfig, rng: &mut Rng) -> Result<Scene, SynthError> {
    let size = cfg.size as f32;
    let margin = (size / 64.0).max(1.0);
    for _attempt in 0..100 {
        let n = cfg.min_objects + rng.below(cfg.max_objects - cfg.min_objects + 1);
        // Attributes first: all descriptions of an image distinct.
        let mut attrs: Vec<Attributes> = vec![];
        while attrs.len() < n {
            let a = Attributes {
                size: rng.below(SIZES.len()),
                colour: rng.below(COLOURS.len()),
                texture: rng.below(TEXTURES.len()),
                shape: rng.below(SHAPES.len()),
            };
            if !attrs.contains(&a) {
                attrs.push(a);
            }
        }
        // Placement by rejection sampling; an object that does not fit ends the attempt.
        let mut feet: Vec<Footprint> = vec![];
        for a in &attrs {
            let frac = if a.size == 0 { rng.range(0.15, 0.20) } else { rng.range(0.30, 0.36) };
            let r = (frac * size / 2.0).max(4.0);
            let mut placed = None;
            for _ in 0..200 {
                let lo = r + margin;
                let hi = size - r - margin;
                let f = Footprint { cx: rng.range(lo, hi), cy: rng.range(lo, hi), r };
                if feet.iter().all(|g| !overlaps(&f, g, 2.0 * margin)) {
                    placed = Some(f);
                    break;
                }
            }
            match placed {
                Some(f) => feet.push(f),
                None => break,
            }
        }
        if feet.len() < n {
            continue;
        }

        // Background: a grey level with a slight tint, plain or with per-pixel noise.
        // Channels stay within 84..=151, away from every fill and mark colour.
        let grey = rng.range(100.0, 135.0);
        let tint = [rng.range(-6.0, 6.0), rng.range(-6.0, 6.0), rng.range(-6.0, 6.0)];
        let noisy = rng.below(2) == 1;
        let s = cfg.size;
        let mut img = image::RgbImage::new(s, s);
        for p in img.pixels_mut() {
            let nz = if noisy { rng.range(-10.0, 10.0) } else { 0.0 };
            *p = image::Rgb(std::array::from_fn(|c| (grey + tint[c] + nz).clamp(0.0, 255.0) as u8));
        }

        let mut objects = vec![];
        for (a, f) in attrs.iter().zip(&feet) {
            let base = COLOURS[a.colour].1;
            let jitter = [rng.range(-10.0, 10.0), rng.range(-10.0, 10.0), rng.range(-10.0, 10.0)];
            let fill: [u8; 3] = std::array::from_fn(|c| (base[c] as f32 + jitter[c]).clamp(0.0, 255.0) as u8);
            let mark = mark_colour(fill);
            let (x0, y0) = ((f.cx - f.r).floor().max(0.0) as u32, (f.cy - f.r).floor().max(0.0) as u32);
            let (x1, y1) = (((f.cx + f.r).ceil() as u32).min(s), ((f.cy + f.r).ceil() as u32).min(s));
            let mut bb = [u32::MAX, u32::MAX, 0, 0];
            for y in y0..y1 {
                for x in x0..x1 {
                    let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                    let (u, v) = ((px - f.cx) / f.r, (py - f.cy) / f.r);
                    if !inside(a.shape, u, v) {
                        continue;
                    }
                    let m = is_mark(a.texture, px - (f.cx - f.r), py - (f.cy - f.r), 2.0 * f.r);
                    img.put_pixel(x, y, image::Rgb(if m { mark } else { fill }));
                    bb = [bb[0].min(x), bb[1].min(y), bb[2].max(x + 1), bb[3].max(y + 1)];
                }
            }
            if bb[0] >= bb[2] || bb[1] >= bb[3] {
                return Err(SynthError::Internal(format!("object {} drew no pixels", a.describe())));
            }
            objects.push(SceneObject { attrs: *a, bbox_px: bb, centre: (f.cx, f.cy), negatives: vec![] });
        }

        // Negatives: single-attribute swaps that describe no object of this image.
        let all: Vec<Attributes> = objects.iter().map(|o| o.attrs).collect();
        for o in objects.iter_mut() {
            let mut cands: Vec<(AttributeKind, Attributes)> =
                o.attrs.single_swaps().into_iter().filter(|(_, c)| !all.contains(c)).collect();
            rng.shuffle(&mut cands);
            if cands.len() < NEGATIVES_PER_BOX {
                return Err(SynthError::Internal(format!("only {} negatives for {}", cands.len(), o.attrs.describe())));
            }
            cands.truncate(NEGATIVES_PER_BOX);
            o.negatives = cands;
        }
        return Ok(Scene { image: img, objects, noisy });
    }
    Err(SynthError::Internal(format!("could not place {} objects in a {}px image", cfg.min_objects, cfg.size)))
}

/// Where an object's centre lies, in thirds of the image.
fn position_phrase(cx: f32, cy: f32, size: f32) -> &'static str {
    let col = ((cx / size) * 3.0).floor().clamp(0.0, 2.0) as usize;
    let row = ((cy / size) * 3.0).floor().clamp(0.0, 2.0) as usize;
    [
        ["in the top left", "at the top", "in the top right"],
        ["on the left", "in the centre", "on the right"],
        ["in the bottom left", "at the bottom", "in the bottom right"],
    ][row][col]
}

/// How `a` lies relative to `b`, along the axis where they are further apart.
fn relation(a: (f32, f32), b: (f32, f32)) -> &'static str {
    let (dx, dy) = (a.0 - b.0, a.1 - b.1);
    if dx.abs() >= dy.abs() {
        if dx < 0.0 {
            "to the left of"
        } else {
            "to the right of"
        }
    } else if dy < 0.0 {
        "above"
    } else {
        "below"
    }
}

fn with_article(s: &str) -> String {
    let an = s.starts_with(|c: char| "aeiou".contains(c));
    format!("{} {s}", if an { "an" } else { "a" })
}

fn join_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [a] => a.clone(),
        [rest @ .., last] => format!("{} and {}", rest.join(", "), last),
    }
}

const NUMBER_WORDS: [&str; 5] = ["No", "One", "Two", "Three", "Four"];

/// The record (and FG-OVD lines) of one scene.
fn describe_scene(scene: &Scene, f_path: &str, size: u32, image_id: usize) -> (Record, Vec<FgovdLine>) {
    let sz = size as f32;
    let objs = &scene.objects;
    let short_caption = join_list(
        &objs
            .iter()
            .map(|o| with_article(&format!("{} {}", COLOURS[o.attrs.colour].0, SHAPES[o.attrs.shape])))
            .collect::<Vec<_>>(),
    );
    let parts: Vec<String> = objs
        .iter()
        .map(|o| format!("{} {}", with_article(&o.attrs.describe()), position_phrase(o.centre.0, o.centre.1, sz)))
        .collect();
    let n = objs.len();
    let caption = format!(
        "{} {} on a {} grey background: {}.",
        NUMBER_WORDS[n.min(4)],
        if n == 1 { "shape" } else { "shapes" },
        if scene.noisy { "noisy" } else { "plain" },
        join_list(&parts)
    );
    let mut boxes = vec![];
    let mut lines = vec![];
    for (i, o) in objs.iter().enumerate() {
        let short_expr = o.attrs.describe();
        let mut long_expr = format!("{} {}", with_article(&short_expr), position_phrase(o.centre.0, o.centre.1, sz));
        // Nearest other object as the neighbour (first one on ties: deterministic).
        let nearest = objs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .min_by(|(_, a), (_, b)| {
                let da = (a.centre.0 - o.centre.0).powi(2) + (a.centre.1 - o.centre.1).powi(2);
                let db = (b.centre.0 - o.centre.0).powi(2) + (b.centre.1 - o.centre.1).powi(2);
                da.total_cmp(&db)
            })
            .map(|(_, b)| b);
        if let Some(nb) = nearest {
            long_expr.push_str(&format!(", {} {}", relation(o.centre, nb.centre), with_article(&nb.attrs.describe())));
        }
        let negs: Vec<String> = o.negatives.iter().map(|(_, a)| a.describe()).collect();
        let b = o.bbox_px;
        boxes.push(BoxInfo {
            bbox: vec![b[0] as f32 / sz, b[1] as f32 / sz, b[2] as f32 / sz, b[3] as f32 / sz],
            short_expr: short_expr.clone(),
            long_expr,
            flag_short_neg: 1,
            short_expr_negs: negs.iter().enumerate().map(|(k, t)| (format!("neg_{k}"), t.clone())).collect::<NegMap>(),
        });
        let mut extra = BTreeMap::new();
        extra.insert("image_id".to_string(), serde_json::json!(image_id));
        extra.insert(
            "neg_attributes".to_string(),
            serde_json::json!(o.negatives.iter().map(|(k, _)| k.name()).collect::<Vec<_>>()),
        );
        lines.push(FgovdLine {
            img_path: f_path.to_string(),
            bbox: [b[0] as f32, b[1] as f32, (b[2] - b[0]) as f32, (b[3] - b[1]) as f32],
            pos_expression: vec![short_expr],
            neg_expression: negs,
            width: Some(size),
            height: Some(size),
            test_type: Some(TEST_TYPE.to_string()),
            extra,
        });
    }
    (Record { f_path: f_path.to_string(), caption, short_caption, bbox_info: boxes, is_cn: None }, lines)
}

/// Renders image `index` of `split` ("train" = 0, "test" = 1) without writing anything: the scene, its record
/// and its FG-OVD lines. `generate` is this for every image plus the files.
pub fn render(cfg: &SynthConfig, split: &str, index: usize) -> Result<(Scene, Record, Vec<FgovdLine>), SynthError> {
    cfg.validate()?;
    let split_id = match split {
        "train" => 0,
        "test" => 1,
        s => return Err(SynthError::Config(format!("unknown split {s:?} (expected train or test)"))),
    };
    let mut rng = image_rng(cfg.seed, split_id, index);
    let scene = render_scene(cfg, &mut rng)?;
    let f_path = format!("{split}_{index:06}.png");
    let image_id = split_id as usize * 1_000_000 + index;
    let (rec, lines) = describe_scene(&scene, &f_path, cfg.size, image_id);
    Ok((scene, rec, lines))
}

fn write_png(img: &image::RgbImage, path: &Path) -> Result<(), SynthError> {
    let f = std::fs::File::create(path).map_err(io_err(path))?;
    let mut w = std::io::BufWriter::new(f);
    img.write_to(&mut w, image::ImageFormat::Png)
        .map_err(|e| SynthError::Png { path: path.into(), msg: e.to_string() })?;
    w.flush().map_err(io_err(path))
}

/// A JSON array with one compact record per line: valid for `json.load`, readable, diff-friendly.
fn write_json_array<T: Serialize>(items: &[T], path: &Path) -> Result<(), SynthError> {
    let mut s = String::from("[\n");
    for (i, it) in items.iter().enumerate() {
        s.push_str(&serde_json::to_string(it).map_err(|e| SynthError::Internal(e.to_string()))?);
        s.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
    }
    s.push_str("]\n");
    std::fs::write(path, s).map_err(io_err(path))
}

fn write_jsonl<T: Serialize>(items: &[T], path: &Path) -> Result<(), SynthError> {
    let mut s = String::new();
    for it in items {
        s.push_str(&serde_json::to_string(it).map_err(|e| SynthError::Internal(e.to_string()))?);
        s.push('\n');
    }
    std::fs::write(path, s).map_err(io_err(path))
}

/// Prepares the output folder: created if missing; a non-empty one needs `overwrite`, and then loses only
/// the PNGs a previous run may have left (`images/train_*.png`, `images/test_*.png`).
fn prepare_out_dir(out: &Path, overwrite: bool) -> Result<PathBuf, SynthError> {
    let images = out.join("images");
    if out.exists() {
        let non_empty = std::fs::read_dir(out).map_err(io_err(out))?.next().is_some();
        if non_empty && !overwrite {
            return Err(SynthError::NotEmpty(out.to_path_buf()));
        }
        if images.is_dir() {
            for e in std::fs::read_dir(&images).map_err(io_err(&images))? {
                let p = e.map_err(io_err(&images))?.path();
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if (name.starts_with("train_") || name.starts_with("test_")) && name.ends_with(".png") {
                    std::fs::remove_file(&p).map_err(io_err(&p))?;
                }
            }
        }
    }
    std::fs::create_dir_all(&images).map_err(io_err(&images))?;
    Ok(images)
}

/// Generates the dataset under `out_dir` (see the module doc for the layout). `progress` is called with the
/// number of images just finished (from worker threads). Same config → byte-identical files.
pub fn generate(
    cfg: &SynthConfig,
    out_dir: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<SynthSummary, SynthError> {
    use rayon::prelude::*;
    cfg.validate()?;
    let images = prepare_out_dir(out_dir, cfg.overwrite)?;
    let mut split_out: Vec<(Vec<Record>, Vec<FgovdLine>)> = vec![];
    for (split, n) in [("train", cfg.train), ("test", cfg.test)] {
        let per: Vec<(Record, Vec<FgovdLine>)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let (scene, rec, lines) = render(cfg, split, i)?;
                write_png(&scene.image, &images.join(&rec.f_path))?;
                progress(1);
                Ok((rec, lines))
            })
            .collect::<Result<_, SynthError>>()?;
        let (recs, lines): (Vec<Record>, Vec<Vec<FgovdLine>>) = per.into_iter().unzip();
        split_out.push((recs, lines.into_iter().flatten().collect()));
    }
    let (train_recs, _) = &split_out[0];
    let (test_recs, test_lines) = &split_out[1];
    write_json_array(train_recs, &out_dir.join("train.json"))?;
    write_json_array(test_recs, &out_dir.join("test.json"))?;
    write_jsonl(test_lines, &out_dir.join("test_fgovd.jsonl"))?;

    let files = [
        ("images", "images/"),
        ("train", "train.json"),
        ("test", "test.json"),
        ("test_fgovd", "test_fgovd.jsonl"),
        ("summary", "synth.json"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let summary = SynthSummary {
        format: "fgclip-synth 1".into(),
        config: cfg.clone(),
        train_images: train_recs.len(),
        test_images: test_recs.len(),
        train_boxes: train_recs.iter().map(|r| r.bbox_info.len()).sum(),
        test_boxes: test_lines.len(),
        negatives_per_box: NEGATIVES_PER_BOX,
        sizes: SIZES.iter().map(|s| s.to_string()).collect(),
        colours: COLOURS.iter().map(|c| c.0.to_string()).collect(),
        textures: TEXTURES.iter().map(|s| s.to_string()).collect(),
        shapes: SHAPES.iter().map(|s| s.to_string()).collect(),
        files,
    };
    let p = out_dir.join("synth.json");
    let text = serde_json::to_string_pretty(&summary).map_err(|e| SynthError::Internal(e.to_string()))?;
    std::fs::write(&p, text + "\n").map_err(io_err(&p))?;
    Ok(summary)
}
