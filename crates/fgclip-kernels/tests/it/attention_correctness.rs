//! Fused attention against a straightforward f64 reference (the candle-ops math: scaled q·kᵀ, additive
//! `f32::MIN` masks, softmax with max subtraction, ·v), on fused-QKV strided layouts; determinism across batch
//! composition and thread counts; fully masked rows.

use fgclip_kernels::attention::{
    attention_backend, attention_bf16, attention_bf16_available, attention_f32, attention_f32_portable, AttnMask,
    AttnShape,
};

/// Which entry point to run.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kern {
    /// `attention_f32` (AVX-512 here).
    Auto,
    Portable,
    Bf16,
}

/// xorshift64*: uniform in [-amp, amp).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, amp: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * amp).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum MaskKind {
    None,
    Causal,
    Bias,
}

/// Inputs in the layout the model has: self-attention reads a fused `[B, N, 3D]` QKV buffer; cross-attention
/// (q_len != kv_len) a separate `[B, Nq, D]` query buffer and a fused `[B, Nk, 2D]` KV buffer.
struct Case {
    s: AttnShape,
    qbuf: Vec<f32>,
    q_stride: usize,
    kvbuf: Vec<f32>,
    kv_stride: usize,
    k_off: usize,
    v_off: usize,
    bias: Vec<f32>,
    kind: MaskKind,
    scale: f32,
}

impl Case {
    fn new(s: AttnShape, kind: MaskKind, amp: f32, seed: u64) -> Case {
        let d = s.heads * s.head_dim;
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let (qbuf, q_stride, kvbuf, kv_stride, k_off, v_off) = if s.q_len == s.kv_len {
            let buf = rng.vec(s.batch * s.q_len * 3 * d, amp);
            (buf.clone(), 3 * d, buf, 3 * d, d, 2 * d)
        } else {
            (rng.vec(s.batch * s.q_len * d, amp), d, rng.vec(s.batch * s.kv_len * 2 * d, amp), 2 * d, 0, d)
        };
        // Key padding: batch element b has its last 3·b + (b % 2) keys masked (HF finfo.min convention).
        let bias = if kind == MaskKind::Bias {
            (0..s.batch)
                .flat_map(|b| {
                    let pad = (3 * b + b % 2).min(s.kv_len - 1);
                    (0..s.kv_len).map(move |j| if j >= s.kv_len - pad { f32::MIN } else { 0.0 })
                })
                .collect()
        } else {
            vec![]
        };
        Case { s, qbuf, q_stride, kvbuf, kv_stride, k_off, v_off, bias, kind, scale: (s.head_dim as f32).powf(-0.5) }
    }

    /// Batch element `b` alone.
    fn element(&self, b: usize) -> Case {
        let s = AttnShape { batch: 1, ..self.s };
        let qn = s.q_len * self.q_stride;
        let kn = s.kv_len * self.kv_stride;
        let bias = if self.bias.is_empty() { vec![] } else { self.bias[b * s.kv_len..(b + 1) * s.kv_len].to_vec() };
        Case {
            s,
            qbuf: self.qbuf[b * qn..(b + 1) * qn].to_vec(),
            kvbuf: self.kvbuf[b * kn..(b + 1) * kn].to_vec(),
            bias,
            ..*self
        }
    }

    fn mask(&self) -> AttnMask<'_> {
        match self.kind {
            MaskKind::None => AttnMask::None,
            MaskKind::Causal => AttnMask::Causal,
            MaskKind::Bias => AttnMask::KeyBias(&self.bias),
        }
    }

    fn run(&self, kern: Kern) -> Vec<f32> {
        let s = &self.s;
        let mut out = vec![f32::NAN; s.batch * s.q_len * s.heads * s.head_dim];
        let f = match kern {
            Kern::Auto => attention_f32,
            Kern::Portable => attention_f32_portable,
            Kern::Bf16 => attention_bf16,
        };
        #[rustfmt::skip]
        f(&self.qbuf, self.q_stride, 0, &self.kvbuf, self.kv_stride, self.k_off, &self.kvbuf, self.kv_stride, self.v_off,
          s, self.scale, self.mask(), &mut out);
        out
    }

    /// f64 reference for query rows `rows` (all batch elements and heads): `[B, rows.len(), D]`.
    fn reference(&self, rows: &[usize]) -> Vec<f64> {
        let s = &self.s;
        let (dh, d) = (s.head_dim, s.heads * s.head_dim);
        let mut out = vec![0f64; s.batch * rows.len() * d];
        let mut sc = vec![0f64; s.kv_len];
        for b in 0..s.batch {
            for h in 0..s.heads {
                for (ri, &i) in rows.iter().enumerate() {
                    let q = &self.qbuf[(b * s.q_len + i) * self.q_stride + h * dh..][..dh];
                    for (j, x) in sc.iter_mut().enumerate() {
                        let k = &self.kvbuf[(b * s.kv_len + j) * self.kv_stride + self.k_off + h * dh..][..dh];
                        *x = q.iter().zip(k).map(|(&a, &c)| a as f64 * self.scale as f64 * c as f64).sum::<f64>();
                        *x += match self.kind {
                            MaskKind::None => 0.0,
                            MaskKind::Causal if j > i => f32::MIN as f64,
                            MaskKind::Causal => 0.0,
                            MaskKind::Bias => self.bias[b * s.kv_len + j] as f64,
                        };
                    }
                    let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    sc.iter_mut().for_each(|x| *x = (*x - m).exp());
                    let z: f64 = sc.iter().sum();
                    let o = &mut out[(b * rows.len() + ri) * d + h * dh..][..dh];
                    for (j, &p) in sc.iter().enumerate() {
                        let v = &self.kvbuf[(b * s.kv_len + j) * self.kv_stride + self.v_off + h * dh..][..dh];
                        for (a, &x) in o.iter_mut().zip(v) {
                            *a += p / z * x as f64;
                        }
                    }
                }
            }
        }
        out
    }

    /// Max |got − reference| over the sampled rows.
    fn max_err(&self, got: &[f32], rows: &[usize]) -> f64 {
        let d = self.s.heads * self.s.head_dim;
        let want = self.reference(rows);
        let mut err = 0f64;
        for b in 0..self.s.batch {
            for (ri, &i) in rows.iter().enumerate() {
                let g = &got[(b * self.s.q_len + i) * d..][..d];
                let w = &want[(b * rows.len() + ri) * d..][..d];
                for (&x, &y) in g.iter().zip(w) {
                    assert!(x.is_finite(), "non-finite output");
                    err = err.max((x as f64 - y).abs());
                }
            }
        }
        err
    }
}

fn shape(batch: usize, q_len: usize, kv_len: usize, heads: usize, head_dim: usize) -> AttnShape {
    AttnShape { batch, q_len, kv_len, heads, head_dim }
}

/// Every row when small, else a spread (including the first/last and block boundaries) to bound reference time.
fn sample_rows(n: usize) -> Vec<usize> {
    if n <= 256 {
        return (0..n).collect();
    }
    let mut r: Vec<usize> = (0..n).step_by(41).chain([47, 48, 49, n - 2, n - 1]).collect();
    r.sort();
    r.dedup();
    r
}

/// Tolerance 1e-5 for O(1) inputs; with amplitude `amp` scores grow as amp² and values as amp, so the
/// float rounding of a score (relative 1e-7 of |s|·√dh) moves the output by about amp³ times as much.
fn check(s: AttnShape, kind: MaskKind, amp: f32, both: bool) {
    let tol = 1e-5 * (amp as f64).powi(3).max(1.0);
    let case = Case::new(s, kind, amp, (s.q_len * 31 + s.kv_len * 7 + s.head_dim) as u64);
    let rows = sample_rows(s.q_len);
    let fast = case.run(Kern::Auto);
    let e = case.max_err(&fast, &rows);
    eprintln!(
        "{s:?} {}: {} max err {e:.2e}",
        if kind == MaskKind::Causal { "causal" } else { "" },
        attention_backend()
    );
    assert!(e <= tol, "{} kernel: max abs error {e:e} for {s:?}", attention_backend());
    if both {
        let slow = case.run(Kern::Portable);
        let e = case.max_err(&slow, &rows);
        assert!(e <= tol, "portable kernel: max abs error {e:e} for {s:?}");
    }
}

#[test]
fn vit_b16() {
    check(shape(1, 197, 197, 12, 64), MaskKind::None, 1.0, true);
}

#[test]
fn small_odd_head_dim() {
    check(shape(2, 50, 50, 4, 24), MaskKind::None, 1.0, true);
}

#[test]
fn map_head_one_query() {
    check(shape(3, 1, 257, 12, 64), MaskKind::None, 1.0, true);
}

#[test]
fn text_causal() {
    check(shape(2, 77, 77, 8, 64), MaskKind::Causal, 1.0, true);
}

#[test]
fn key_padding_bias() {
    check(shape(2, 64, 64, 12, 64), MaskKind::Bias, 1.0, true);
}

#[test]
fn siglip_1024() {
    check(shape(1, 1024, 1024, 12, 64), MaskKind::None, 1.0, false);
}

/// Peaked softmax (scores of tens): exercises the max subtraction and exp over a wide range.
#[test]
fn peaked_scores() {
    check(shape(2, 50, 50, 4, 64), MaskKind::None, 4.0, true);
    check(shape(2, 77, 77, 2, 64), MaskKind::Causal, 4.0, true);
    check(shape(3, 64, 64, 2, 64), MaskKind::Bias, 4.0, true);
}

/// Head dims that are not 64: tails of 16-lane vectors and more than 4 vectors per row.
#[test]
fn other_head_dims() {
    for dh in [1, 8, 16, 40, 72, 80, 128, 200] {
        check(shape(2, 33, 33, 3, dh), MaskKind::None, 1.0, true);
    }
    check(shape(1, 20, 130, 2, 72), MaskKind::None, 1.0, true);
    check(shape(1, 129, 17, 2, 80), MaskKind::None, 1.0, true);
}

/// Causal with q_len != kv_len: query i sees keys 0..=min(i, kv_len - 1).
#[test]
fn causal_rectangular() {
    check(shape(2, 5, 61, 2, 32), MaskKind::Causal, 1.0, true);
    check(shape(2, 100, 7, 2, 32), MaskKind::Causal, 1.0, true);
}

/// Separate (non-fused) buffers with padded rows and nonzero offsets.
#[test]
fn separate_padded_buffers() {
    let s = shape(2, 40, 40, 3, 16);
    let d = s.heads * s.head_dim;
    let mut rng = Rng(7);
    let (qs, ks, vs) = (d + 5, d + 16, d + 1);
    let q = rng.vec(s.batch * s.q_len * qs, 1.0);
    let k = rng.vec(s.batch * s.kv_len * ks, 1.0);
    let v = rng.vec(s.batch * s.kv_len * vs, 1.0);
    let scale = 0.3;
    let mut out = vec![0f32; s.batch * s.q_len * d];
    attention_f32(&q, qs, 3, &k, ks, 16, &v, vs, 1, &s, scale, AttnMask::None, &mut out);
    // Repack into a fused layout and compare with the fused call.
    let mut fused = vec![0f32; s.batch * s.q_len * 3 * d];
    for r in 0..s.batch * s.q_len {
        fused[r * 3 * d..][..d].copy_from_slice(&q[r * qs + 3..][..d]);
        fused[r * 3 * d + d..][..d].copy_from_slice(&k[r * ks + 16..][..d]);
        fused[r * 3 * d + 2 * d..][..d].copy_from_slice(&v[r * vs + 1..][..d]);
    }
    let mut out2 = vec![0f32; out.len()];
    attention_f32(&fused, 3 * d, 0, &fused, 3 * d, d, &fused, 3 * d, 2 * d, &s, scale, AttnMask::None, &mut out2);
    assert_eq!(out, out2);
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

/// One batch element alone gives bit-identical results to the same element inside a batch, whatever the thread
/// count (task splitting differs: few (batch, head) pairs split queries into chunks).
#[test]
fn batch_vs_single_bit_identical() {
    let cases = [
        (shape(4, 197, 197, 12, 64), MaskKind::None),
        (shape(3, 77, 77, 8, 64), MaskKind::Causal),
        (shape(3, 64, 64, 2, 64), MaskKind::Bias),
        (shape(5, 1, 257, 12, 64), MaskKind::None),
        (shape(3, 150, 150, 1, 24), MaskKind::None),
    ];
    for (s, kind) in cases {
        let case = Case::new(s, kind, 2.0, 11);
        let d = s.heads * s.head_dim;
        for kern in [Kern::Auto, Kern::Portable, Kern::Bf16] {
            let full = in_pool(2, || case.run(kern));
            for threads in [1, 3] {
                assert!(full == in_pool(threads, || case.run(kern)), "{s:?}: result depends on thread count");
            }
            for b in 0..s.batch {
                let single = case.element(b);
                let got = in_pool(2, || single.run(kern));
                let want = &full[b * s.q_len * d..(b + 1) * s.q_len * d];
                assert!(
                    got.iter().zip(want).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{s:?} {kern:?}: batch element {b} differs alone vs in batch"
                );
            }
        }
    }
}

/// A row whose keys are all masked gives the uniform average of the values (PyTorch with an additive finfo.min
/// mask), never NaN; also for a `-inf` bias.
#[test]
fn fully_masked_row() {
    let s = shape(2, 9, 33, 3, 24);
    let d = s.heads * s.head_dim;
    let mut rng = Rng(5);
    let q = rng.vec(s.batch * s.q_len * d, 3.0);
    let kv = rng.vec(s.batch * s.kv_len * 2 * d, 3.0);
    for masked in [f32::MIN, f32::NEG_INFINITY] {
        // Batch 0 fully masked; batch 1 all keys but 2 masked.
        let bias: Vec<f32> = (0..s.batch * s.kv_len)
            .map(|i| if i < s.kv_len || !(i % s.kv_len == 4 || i % s.kv_len == 20) { masked } else { 0.0 })
            .collect();
        for (kern, tol) in [(Kern::Auto, 1e-5), (Kern::Portable, 1e-5), (Kern::Bf16, 2e-2)] {
            let mut out = vec![0f32; s.batch * s.q_len * d];
            let f = match kern {
                Kern::Auto => attention_f32,
                Kern::Portable => attention_f32_portable,
                Kern::Bf16 => attention_bf16,
            };
            f(&q, d, 0, &kv, 2 * d, 0, &kv, 2 * d, d, &s, 0.125, AttnMask::KeyBias(&bias), &mut out);
            assert!(out.iter().all(|x| x.is_finite()), "NaN/inf with bias {masked}");
            for c in 0..d {
                let mean = (0..s.kv_len).map(|j| kv[j * 2 * d + d + c] as f64).sum::<f64>() / s.kv_len as f64;
                for i in 0..s.q_len {
                    assert!(
                        (out[i * d + c] as f64 - mean).abs() < tol,
                        "{kern:?}: fully masked row is not the mean of v"
                    );
                }
            }
            // Batch 1: only keys 4 and 20 carry weight.
            let h_of = |c: usize| c / s.head_dim;
            for i in 0..s.q_len {
                for c in 0..d {
                    let h = h_of(c);
                    let qi = &q[(s.q_len + i) * d + h * s.head_dim..][..s.head_dim];
                    let score = |j: usize| {
                        let k = &kv[(s.kv_len + j) * 2 * d + h * s.head_dim..][..s.head_dim];
                        0.125 * qi.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
                    };
                    let (a, b) = (score(4), score(20));
                    let m = a.max(b);
                    let (ea, eb) = ((a - m).exp(), (b - m).exp());
                    let v = |j: usize| kv[(s.kv_len + j) * 2 * d + d + c] as f64;
                    let want = (ea * v(4) + eb * v(20)) / (ea + eb);
                    assert!((out[(s.q_len + i) * d + c] as f64 - want).abs() < tol, "{kern:?}: two live keys");
                }
            }
        }
    }
}

#[test]
fn empty_and_degenerate() {
    let s = shape(2, 3, 0, 2, 8);
    let mut out = vec![f32::NAN; 2 * 3 * 16];
    attention_f32(&[0.0; 96], 16, 0, &[], 16, 0, &[], 16, 0, &s, 1.0, AttnMask::None, &mut out);
    assert!(out.iter().all(|&x| x == 0.0));
    let s = shape(0, 3, 5, 2, 8);
    attention_f32(&[], 16, 0, &[], 16, 0, &[], 16, 0, &s, 1.0, AttnMask::None, &mut []);
}

#[test]
#[should_panic(expected = "out must be")]
fn wrong_out_len_panics() {
    let s = shape(1, 2, 2, 1, 4);
    attention_f32(&[0.0; 24], 12, 0, &[0.0; 24], 12, 4, &[0.0; 24], 12, 8, &s, 1.0, AttnMask::None, &mut [0.0; 7]);
}

/// The bf16 kernel against the same f64 reference. Rounding q, k, p, v to bf16 (8-bit mantissa) costs about
/// 2^-9 relative per factor; measured max errors for O(1) inputs are ~1e-3 (printed), asserted ≤ 4e-3.
#[test]
fn bf16_error() {
    if !attention_bf16_available() {
        eprintln!("no avx512bf16: attention_bf16 runs the f32 kernel, nothing to measure");
        return;
    }
    let cases = [
        (shape(1, 197, 197, 12, 64), MaskKind::None),
        (shape(2, 50, 50, 4, 24), MaskKind::None),
        (shape(3, 1, 257, 12, 64), MaskKind::None),
        (shape(2, 77, 77, 8, 64), MaskKind::Causal),
        (shape(2, 64, 64, 12, 64), MaskKind::Bias),
        (shape(1, 1024, 1024, 12, 64), MaskKind::None),
        (shape(2, 33, 33, 3, 72), MaskKind::None),
        (shape(2, 31, 31, 2, 9), MaskKind::Causal),
    ];
    for (s, kind) in cases {
        let case = Case::new(s, kind, 1.0, (s.q_len * 31 + s.kv_len * 7 + s.head_dim) as u64);
        let rows = sample_rows(s.q_len);
        let e = case.max_err(&case.run(Kern::Bf16), &rows);
        eprintln!("{s:?} {kind:?}: bf16 max err {e:.2e}");
        assert!(e <= 4e-3, "bf16: max abs error {e:e} for {s:?}");
    }
}
