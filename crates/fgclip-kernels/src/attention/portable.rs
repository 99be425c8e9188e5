//! Plain-Rust kernels (the fallback without AVX-512), with the layouts and blocking of the AVX-512 ones. Written as
//! 16-lane loops over fixed-size arrays so that LLVM vectorises them with whatever the target has.

/// `s[r][16p + l] = Σ_d q[r][d] · kp[p][d][l]` for `r < rows`, `p < panels`.
pub(super) fn scores(q: &[f32], dh: usize, rows: usize, kp: &[f32], panels: usize, s: &mut [f32], s_stride: usize) {
    for r in 0..rows {
        let qr = &q[r * dh..(r + 1) * dh];
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
pub(super) fn softmax_row(row: &mut [f32], valid: usize, bias: Option<&[f32]>) -> f32 {
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

/// `o[r][..dhp] = inv[r] · Σ_{j<n} p[r][j] · vp[j][..dhp]` for `r < rows`.
#[allow(clippy::too_many_arguments)]
pub(super) fn pv(p: &[f32], p_stride: usize, rows: usize, n: usize, vp: &[f32], dhp: usize, inv: &[f32], o: &mut [f32]) {
    for r in 0..rows {
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
