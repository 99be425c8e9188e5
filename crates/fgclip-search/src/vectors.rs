//! Stored vectors: L2-normalised embeddings kept as little-endian f16 (half the bytes of f32; cosine
//! similarities move by < 1e-3, far below the gaps that decide a ranking), and the dot products of search.

use half::f16;

/// Unit-length copy of `v` (a zero vector stays zero: degenerate boxes have no direction).
pub fn normalized(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n == 0.0 || !n.is_finite() {
        return vec![0.0; v.len()];
    }
    v.iter().map(|x| x / n).collect()
}

/// f32 → little-endian f16 bytes.
pub fn to_f16_bytes(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 2);
    for x in v {
        out.extend_from_slice(&f16::from_f32(*x).to_le_bytes());
    }
    out
}

/// Little-endian f16 bytes → f32.
pub fn from_f16_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
}

/// `⟨q, v⟩` with `v` as little-endian f16 bytes; `None` when the lengths disagree (a corrupt row).
pub fn dot_f16(q: &[f32], v: &[u8]) -> Option<f32> {
    if v.len() != q.len() * 2 {
        return None;
    }
    // Four accumulators let the compiler vectorise the f16 → f32 conversion and the FMAs.
    let mut acc = [0f32; 4];
    let (qc, vc) = (q.chunks_exact(4), v.chunks_exact(8));
    let (qr, vr) = (qc.remainder(), vc.remainder());
    for (qs, vs) in qc.zip(vc) {
        for k in 0..4 {
            acc[k] += qs[k] * f16::from_le_bytes([vs[2 * k], vs[2 * k + 1]]).to_f32();
        }
    }
    let mut s = acc[0] + acc[1] + acc[2] + acc[3];
    for (x, c) in qr.iter().zip(vr.chunks_exact(2)) {
        s += x * f16::from_le_bytes([c[0], c[1]]).to_f32();
    }
    Some(s)
}

/// Keeps the `k` best `(score, item)` pairs seen (ties: the first seen wins), sorted best first by `into_sorted`.
pub struct TopK<T> {
    k: usize,
    items: Vec<(f32, u64, T)>,
    seq: u64,
    /// The lowest kept score once full (the entry bar), so most pushes cost one comparison.
    worst: f32,
}

impl<T> TopK<T> {
    pub fn new(k: usize) -> Self {
        Self { k, items: Vec::with_capacity(k.min(4096) + 1), seq: 0, worst: f32::NEG_INFINITY }
    }

    /// The score an item must beat to enter (−∞ while not full).
    pub fn threshold(&self) -> f32 {
        self.worst
    }

    pub fn push(&mut self, score: f32, item: T) {
        self.seq += 1;
        if self.k == 0 || !score.is_finite() {
            return;
        }
        if self.items.len() < self.k {
            self.items.push((score, self.seq, item));
            if self.items.len() == self.k {
                self.worst = self.items.iter().map(|x| x.0).fold(f32::INFINITY, f32::min);
            }
            return;
        }
        if score <= self.worst {
            return;
        }
        // Replace the worst (lowest score, latest among equals) when strictly better.
        let (wi, worst) = self
            .items
            .iter()
            .enumerate()
            .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)))
            .map(|(i, x)| (i, x.0))
            .expect("k > 0 and full");
        if score > worst {
            self.items[wi] = (score, self.seq, item);
            self.worst = self.items.iter().map(|x| x.0).fold(f32::INFINITY, f32::min);
        }
    }

    pub fn into_sorted(mut self) -> Vec<(f32, T)> {
        self.items.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        self.items.into_iter().map(|(s, _, t)| (s, t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_round_trip_and_dot() {
        let v = normalized(&[3.0, 4.0, 0.0, 0.0, 1e-3]);
        let b = to_f16_bytes(&v);
        let back = from_f16_bytes(&b);
        for (a, b) in v.iter().zip(&back) {
            assert!((a - b).abs() < 1e-3);
        }
        let d = dot_f16(&v, &b).unwrap();
        assert!((d - 1.0).abs() < 2e-3, "{d}");
        assert_eq!(dot_f16(&v[..4], &b), None);
    }

    #[test]
    fn top_k_keeps_best_in_order() {
        let mut t = TopK::new(3);
        for (i, s) in [0.1f32, 0.9, 0.5, 0.7, 0.2, 0.9].iter().enumerate() {
            t.push(*s, i);
        }
        let got: Vec<usize> = t.into_sorted().into_iter().map(|x| x.1).collect();
        assert_eq!(got, vec![1, 5, 3]);
    }
}
