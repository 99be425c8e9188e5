//! Plain-Rust kernels (the fallback without AVX-512), with the layouts and blocking of the AVX-512 ones. Written as
//! 16-lane loops over fixed-size arrays so that LLVM vectorises them with whatever the target has.

use super::{Geom, Kernels};

/// The portable kernel set.
#[derive(Clone, Copy)]
pub(super) struct Portable;

impl Kernels for Portable {
    fn pack_kv(self, k: &[f32], ks: usize, v: &[f32], vs: usize, g: Geom, kp: &mut [f32], vp: &mut [f32]) {
        super::pack_kv_portable(k, ks, v, vs, g, kp, vp);
    }
    fn scores(
        self,
        q: &[f32],
        dh: usize,
        rows: usize,
        kp: &[f32],
        panels: usize,
        s: &mut [f32],
        s_stride: usize,
        causal: Option<usize>,
    ) {
        scores(q, dh, rows, kp, panels, s, s_stride, causal);
    }
    fn softmax_row(self, row: &mut [f32], valid: usize, bias: Option<&[f32]>) -> f32 {
        softmax_row(row, valid, bias)
    }
    fn pv(
        self,
        p: &[f32],
        p_stride: usize,
        rows: usize,
        n: usize,
        vp: &[f32],
        dhp: usize,
        inv: &[f32],
        o: &mut [f32],
        causal: Option<usize>,
    ) {
        pv(p, p_stride, rows, n, vp, dhp, inv, o, causal);
    }
    fn scores_direct(self, q: &[f32], k: &[f32], ks: usize, s: &mut [f32]) {
        scores_direct(q, k, ks, s);
    }
    fn pv_direct(self, p: &[f32], v: &[f32], vs: usize, inv: f32, o: &mut [f32]) {
        pv_direct(p, v, vs, inv, o);
    }
}

/// `s[r][16p + l] = Σ_d q[r][d] · kp[p][d][l]` for `r < rows`, `p < panels`; with `causal = Some(i0)` (row r is
/// query i0 + r) only the panels the row sees.
#[allow(clippy::too_many_arguments)]
fn scores(
    q: &[f32],
    dh: usize,
    rows: usize,
    kp: &[f32],
    panels: usize,
    s: &mut [f32],
    s_stride: usize,
    causal: Option<usize>,
) {
    for r in 0..rows {
        let qr = &q[r * dh..(r + 1) * dh];
        let panels = causal.map_or(panels, |i0| panels.min((i0 + r + 1).div_ceil(16)));
        for p in 0..panels {
            let panel = &kp[p * 16 * dh..(p + 1) * 16 * dh];
            let mut acc = [0f32; 16];
            for (&x, kd) in qr.iter().zip(panel.chunks_exact(16)) {
                for l in 0..16 {
                    acc[l] += x * kd[l];
                }
            }
            s[r * s_stride + p * 16..][..16].copy_from_slice(&acc);
        }
    }
}

/// Softmax of `row[..valid]` in place, unnormalised (`exp(x - max)`), with the key bias added first; zeroes
/// `row[valid..]`. Returns `1 / Σ`. A row whose maximum is `-inf` (every key `-inf`) becomes uniform.
fn softmax_row(row: &mut [f32], valid: usize, bias: Option<&[f32]>) -> f32 {
    let (live, dead) = row.split_at_mut(valid);
    dead.fill(0.0);
    if let Some(bias) = bias {
        for (x, b) in live.iter_mut().zip(bias) {
            *x += b;
        }
    }
    let mut m = [f32::NEG_INFINITY; 16];
    let mut chunks = live.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            m[l] = m[l].max(c[l]);
        }
    }
    let max = chunks.remainder().iter().fold(m.iter().copied().fold(f32::NEG_INFINITY, f32::max), |a, &x| a.max(x));
    if max == f32::NEG_INFINITY {
        live.fill(1.0);
        return 1.0 / valid as f32;
    }
    let mut sum = [0f32; 16];
    let mut chunks = live.chunks_exact_mut(16);
    for c in &mut chunks {
        for l in 0..16 {
            c[l] = (c[l] - max).exp();
            sum[l] += c[l];
        }
    }
    let mut total = sum.iter().sum::<f32>();
    for x in chunks.into_remainder() {
        *x = (*x - max).exp();
        total += *x;
    }
    1.0 / total
}

/// `o[r][..dhp] = inv[r] · Σ_{j<n} p[r][j] · vp[j][..dhp]` for `r < rows`; with `causal = Some(i0)` row r stops
/// at key i0 + r (later p are 0).
#[allow(clippy::too_many_arguments)]
fn pv(
    p: &[f32],
    p_stride: usize,
    rows: usize,
    n: usize,
    vp: &[f32],
    dhp: usize,
    inv: &[f32],
    o: &mut [f32],
    causal: Option<usize>,
) {
    for r in 0..rows {
        let n = causal.map_or(n, |i0| n.min(i0 + r + 1));
        let acc = &mut o[r * dhp..(r + 1) * dhp];
        acc.fill(0.0);
        for (&w, vrow) in p[r * p_stride..r * p_stride + n].iter().zip(vp.chunks_exact(dhp)) {
            for (a, &x) in acc.iter_mut().zip(vrow) {
                *a += w * x;
            }
        }
        for a in acc.iter_mut() {
            *a *= inv[r];
        }
    }
}

/// Scores of one query against unpacked keys: `s[j] = Σ_d q[d] · k[j·k_stride + d]`.
fn scores_direct(q: &[f32], k: &[f32], k_stride: usize, s: &mut [f32]) {
    let dh = q.len();
    for (j, out) in s.iter_mut().enumerate() {
        let row = &k[j * k_stride..j * k_stride + dh];
        let mut acc = [0f32; 16];
        let (qc, kc) = (q.chunks_exact(16), row.chunks_exact(16));
        let tail: f32 = qc.remainder().iter().zip(kc.remainder()).map(|(a, b)| a * b).sum();
        for (a, b) in qc.zip(kc) {
            for l in 0..16 {
                acc[l] += a[l] * b[l];
            }
        }
        *out = acc.iter().sum::<f32>() + tail;
    }
}

/// `o[..dh] = inv · Σ_j p[j] · v[j·v_stride..][..dh]` over unpacked values.
fn pv_direct(p: &[f32], v: &[f32], v_stride: usize, inv: f32, o: &mut [f32]) {
    let dh = o.len();
    o.fill(0.0);
    for (j, &w) in p.iter().enumerate() {
        for (a, &x) in o.iter_mut().zip(&v[j * v_stride..j * v_stride + dh]) {
            *a += w * x;
        }
    }
    for a in o.iter_mut() {
        *a *= inv;
    }
}
