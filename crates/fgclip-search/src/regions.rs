//! Region candidates: the boxes an image is indexed with, so that a text query can be answered with a box.
//!
//! The dense map is computed anyway for the global embedding, so candidates cost one RoIAlign each, not a tower
//! pass. Two kinds go into one pool, each pooled by the model's own region path (RoIAlign of the dense map, as
//! `get_image_region_features`):
//! - **windows**: multi-scale boxes on the patch grid (sides as fractions of the grid's shorter side, a few aspect
//!   ratios, half-window strides), which cover every place an object can be;
//! - **segments**: boxes around groups of neighbouring patches whose dense vectors agree, at several agreement
//!   levels, which follow the objects the model itself separates.
//!
//! The pool is thinned without any query in sight: candidates are ranked by how far their vector lies from the
//! image's mean patch (the background most of them share), and one is dropped when it overlaps an already kept one
//! (IoU ≥ `merge_iou`) and says the same thing (cosine ≥ `merge_cos`). At most `max_per_image` survive. SEARCH.md
//! compares the designs; the configuration is stored in the index, so a search always knows how its regions were
//! made.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegionConfig {
    /// Window sides as fractions of the grid's shorter side.
    pub scales: Vec<f32>,
    /// Window aspect ratios (width / height).
    pub aspects: Vec<f32>,
    /// Step between windows as a fraction of the window's side.
    pub stride: f32,
    /// Most regions kept per image (0: index whole images only).
    pub max_per_image: usize,
    /// Two windows are duplicates when they overlap at least this much (IoU) ...
    pub merge_iou: f32,
    /// ... and their vectors are at least this similar (cosine).
    pub merge_cos: f32,
    /// Segments of the dense map as further candidates: for each cosine threshold, the boxes around groups of
    /// 4-connected patches whose neighbouring vectors agree at least that much (empty: windows only).
    pub segments: Vec<f32>,
}

impl Default for RegionConfig {
    fn default() -> Self {
        Self {
            scales: vec![0.3, 0.45, 0.65, 0.85],
            aspects: vec![1.0, 2.0, 0.5],
            stride: 0.5,
            max_per_image: 24,
            merge_iou: 0.5,
            merge_cos: 0.95,
            segments: vec![0.9, 0.8, 0.7, 0.6, 0.5],
        }
    }
}

impl RegionConfig {
    pub fn validate(&self) -> Result<(), String> {
        let bad = |what: &str| Err(format!("region config: {what}"));
        if self.scales.iter().any(|s| !(s.is_finite() && *s > 0.0 && *s <= 1.0)) {
            return bad("every scale must be in (0, 1]");
        }
        if self.aspects.iter().any(|a| !(a.is_finite() && *a >= 0.1 && *a <= 10.0)) {
            return bad("every aspect must be in [0.1, 10]");
        }
        if !(self.stride.is_finite() && self.stride > 0.0 && self.stride <= 1.0) {
            return bad("stride must be in (0, 1]");
        }
        if self.segments.iter().any(|t| !(-1.0..=1.0).contains(t)) {
            return bad("every segment threshold must be a cosine in [-1, 1]");
        }
        if !(0.0..=1.0).contains(&self.merge_iou) || !(-1.0..=1.0).contains(&self.merge_cos) {
            return bad("merge_iou must be in [0, 1] and merge_cos in [-1, 1]");
        }
        Ok(())
    }
}

/// Candidate windows `[x1, y1, x2, y2]` in grid units (cells) on a `rows × cols` grid, deduplicated.
pub fn windows(rows: usize, cols: usize, cfg: &RegionConfig) -> Vec<[f32; 4]> {
    let (r, c) = (rows as f32, cols as f32);
    let short = r.min(c);
    let mut out: Vec<[f32; 4]> = Vec::new();
    for &s in &cfg.scales {
        for &a in &cfg.aspects {
            let side = s * short;
            let w = (side * a.sqrt()).clamp(1.0, c);
            let h = (side / a.sqrt()).clamp(1.0, r);
            for y in starts(r, h, cfg.stride * h) {
                for x in starts(c, w, cfg.stride * w) {
                    let b = [x, y, x + w, y + h];
                    if !out.iter().any(|o| o.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-3)) {
                        out.push(b);
                    }
                }
            }
        }
    }
    out
}

/// Segment boxes `[x1, y1, x2, y2]` in grid units on a `rows × cols` grid whose patch vectors (unit length,
/// row-major) are `feats`: for each threshold, patches are joined with their right and lower neighbours when the
/// two vectors' cosine reaches it, and every group of at least two patches that leaves a tenth of the grid out
/// gives its bounding box. Deduplicated; thresholds high to low give parts before wholes.
pub fn segments(feats: &[Vec<f32>], rows: usize, cols: usize, thresholds: &[f32]) -> Vec<[f32; 4]> {
    let n = rows * cols;
    if feats.len() != n || n == 0 {
        return vec![];
    }
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    // Each patch's edges to its right and lower neighbours, with their cosines (computed once for all thresholds).
    let mut edges: Vec<(usize, usize, f32)> = Vec::with_capacity(2 * n);
    for i in 0..n {
        let (y, x) = (i / cols, i % cols);
        for j in [(x + 1 < cols).then_some(i + 1), (y + 1 < rows).then_some(i + cols)].into_iter().flatten() {
            edges.push((i, j, dot(&feats[i], &feats[j])));
        }
    }
    let mut out: Vec<[f32; 4]> = Vec::new();
    for &t in thresholds {
        let mut parent: Vec<usize> = (0..n).collect();
        for &(i, j, c) in &edges {
            if c >= t {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
        // Per group: cell count and bounds.
        let mut groups: std::collections::BTreeMap<usize, (usize, [usize; 4])> = Default::default();
        for i in 0..n {
            let (y, x) = (i / cols, i % cols);
            let g = groups.entry(root(&mut parent, i)).or_insert((0, [x, y, x, y]));
            g.0 += 1;
            g.1 = [g.1[0].min(x), g.1[1].min(y), g.1[2].max(x), g.1[3].max(y)];
        }
        for (count, [x1, y1, x2, y2]) in groups.into_values() {
            let b = [x1 as f32, y1 as f32, (x2 + 1) as f32, (y2 + 1) as f32];
            let area = (b[2] - b[0]) * (b[3] - b[1]);
            if count >= 2 && area <= 0.9 * n as f32 && !out.contains(&b) {
                out.push(b);
            }
        }
    }
    out
}

/// Window starts along one axis of length `len`: every `step`, plus one flush with the far edge.
fn starts(len: f32, win: f32, step: f32) -> Vec<f32> {
    let last = (len - win).max(0.0);
    let step = step.max(0.5);
    let mut v = Vec::new();
    let mut p = 0.0;
    while p < last - 1e-3 {
        v.push(p);
        p += step;
    }
    v.push(last);
    v
}

/// Grid units → original pixels of an image of `size_hw`.
pub fn grid_to_pixels(b: &[f32; 4], rows: usize, cols: usize, size_hw: (usize, usize)) -> [f32; 4] {
    let (sx, sy) = (size_hw.1 as f32 / cols as f32, size_hw.0 as f32 / rows as f32);
    [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]
}

pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |x: &[f32; 4]| (x[2] - x[0]).max(0.0) * (x[3] - x[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Which candidates to keep (indices, best first): `boxes` with unit vectors `vecs`; `background` is the
/// image's unit mean patch vector. See the module docs for the rule.
pub fn select(boxes: &[[f32; 4]], vecs: &[Vec<f32>], background: &[f32], cfg: &RegionConfig) -> Vec<usize> {
    let mut order: Vec<(f32, usize)> = vecs
        .iter()
        .enumerate()
        .filter(|(_, v)| v.iter().any(|x| *x != 0.0))
        .map(|(i, v)| (dot(v, background), i))
        .collect();
    // Most distinct from the background first; ties by position so the result is deterministic.
    order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut kept: Vec<usize> = Vec::new();
    for (_, i) in order {
        if kept.len() >= cfg.max_per_image {
            break;
        }
        let dup = kept
            .iter()
            .any(|&j| iou(&boxes[i], &boxes[j]) >= cfg.merge_iou && dot(&vecs[i], &vecs[j]) >= cfg.merge_cos);
        if !dup {
            kept.push(i);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_grid_and_stay_inside() {
        let cfg = RegionConfig::default();
        for (r, c) in [(14, 14), (7, 20), (1, 1), (24, 24)] {
            let w = windows(r, c, &cfg);
            assert!(!w.is_empty());
            for b in &w {
                assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= c as f32 + 1e-4 && b[3] <= r as f32 + 1e-4, "{b:?}");
                assert!(b[2] > b[0] && b[3] > b[1]);
            }
            // Some window touches each corner.
            assert!(w.iter().any(|b| b[0] == 0.0 && b[1] == 0.0));
            assert!(w.iter().any(|b| (b[2] - c as f32).abs() < 1e-4 && (b[3] - r as f32).abs() < 1e-4));
        }
    }

    #[test]
    fn segments_box_the_groups_of_agreeing_patches() {
        // A 4 × 6 grid: background [1, 0], a 2 × 2 object [0, 1] at columns 1–2, rows 1–2, and a lone odd patch.
        let (rows, cols) = (4, 6);
        let mut feats = vec![vec![1.0f32, 0.0]; rows * cols];
        for (y, x) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
            feats[y * cols + x] = vec![0.0, 1.0];
        }
        feats[3 * cols + 5] = vec![0.6, 0.8];
        let s = segments(&feats, rows, cols, &[0.9]);
        // The object's box; the background covers the whole grid and the lone patch is one cell: both left out.
        assert_eq!(s, vec![[1.0, 1.0, 3.0, 3.0]]);
        // At a threshold everything passes, one group covers the grid: nothing.
        assert!(segments(&feats, rows, cols, &[-1.0]).is_empty());
        // Wrong feature count: nothing rather than a panic.
        assert!(segments(&feats[1..], rows, cols, &[0.9]).is_empty());
    }

    #[test]
    fn select_drops_overlapping_duplicates_and_caps() {
        let boxes = [[0.0, 0.0, 4.0, 4.0], [0.5, 0.0, 4.5, 4.0], [8.0, 8.0, 12.0, 12.0]];
        let vecs = vec![vec![1.0, 0.0], vec![1.0, 0.0], vec![0.0, 1.0]];
        let bg = [0.6f32, 0.8];
        let cfg = RegionConfig { max_per_image: 10, ..Default::default() };
        let kept = select(&boxes, &vecs, &bg, &cfg);
        assert_eq!(kept, vec![0, 2]);
        let cfg1 = RegionConfig { max_per_image: 1, ..Default::default() };
        assert_eq!(select(&boxes, &vecs, &bg, &cfg1), vec![0]);
        assert!((iou(&boxes[0], &boxes[1]) - 14.0 / 18.0).abs() < 1e-6);
    }
}
