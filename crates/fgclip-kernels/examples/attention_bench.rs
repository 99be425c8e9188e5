//! Fused attention (f32, bf16 products, portable) vs the candle-ops sequence the model used before (q·scale, reshape + transpose + contiguous of
//! q, k, v, batched matmul q·kᵀ, broadcast-add mask, `softmax_last_dim`, batched matmul ·v, transpose back +
//! reshape), side by side in one process, alternating runs so that noise from other processes hits both.
//!
//! `cargo run --release -p fgclip-kernels --example attention_bench [-- THREADS [SECONDS_PER_CASE]]`
//! (default 2 threads, 3 s per case). Candle starts from separate contiguous q, k, v `[B, N, D]` tensors (what
//! its projections produce; the causal bias tensor is built once, outside the timing); the fused kernel reads one
//! fused `[B, N, 3D]` QKV buffer.

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use fgclip_kernels::attention::{
    attention_backend, attention_bf16, attention_bf16_available, attention_f32, attention_f32_portable, AttnMask,
    AttnShape,
};

struct Case {
    name: &'static str,
    s: AttnShape,
    causal: bool,
}

fn candle_attention(q: &Tensor, k: &Tensor, v: &Tensor, s: &AttnShape, scale: f64, mask: Option<&Tensor>) -> Tensor {
    let (b, h, dh) = (s.batch, s.heads, s.head_dim);
    let q = (q * scale).unwrap();
    let q = q.reshape((b, s.q_len, h, dh)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
    let k = k.reshape((b, s.kv_len, h, dh)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
    let v = v.reshape((b, s.kv_len, h, dh)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
    let scores = q.matmul(&k.t().unwrap()).unwrap();
    let scores = match mask {
        Some(m) => scores.broadcast_add(m).unwrap(),
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
    let o = probs.matmul(&v).unwrap();
    o.transpose(1, 2).unwrap().reshape((b, s.q_len, h * dh)).unwrap()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).map_or(2, |a| a.parse().expect("THREADS"));
    let budget = Duration::from_secs_f64(args.get(2).map_or(3.0, |a| a.parse().expect("SECONDS")));
    // candle's gemm sizes its parallelism from RAYON_NUM_THREADS; both run on the same global pool.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().unwrap();

    let sh = |batch, n, heads| AttnShape { batch, q_len: n, kv_len: n, heads, head_dim: 64 };
    let cases = [
        Case { name: "ViT-B/16 b1", s: sh(1, 197, 12), causal: false },
        Case { name: "ViT-B/16 b16", s: sh(16, 197, 12), causal: false },
        Case { name: "SigLIP2 N=256 b1", s: sh(1, 256, 12), causal: false },
        Case { name: "SigLIP2 N=1024 b1", s: sh(1, 1024, 12), causal: false },
        Case { name: "text 77 causal b1", s: sh(1, 77, 8), causal: true },
        Case { name: "text 77 causal b16", s: sh(16, 77, 8), causal: true },
        Case {
            name: "MAP 1×256 b16",
            s: AttnShape { batch: 16, q_len: 1, kv_len: 256, heads: 12, head_dim: 64 },
            causal: false,
        },
    ];
    println!(
        "backend {}, bf16 kernel {}, {threads} threads; median ms per call",
        attention_backend(),
        if attention_bf16_available() { "yes" } else { "no (runs f32)" }
    );
    println!("| case | candle ops | fused f32 | speed-up | f32 GFLOP/s | fused bf16 | speed-up | portable | max |Δ| f32, bf16 vs candle |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in &cases {
        let s = c.s;
        let d = s.heads * s.head_dim;
        let scale = (s.head_dim as f64).powf(-0.5);
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let q: Vec<f32> = (0..s.batch * s.q_len * d).map(|_| rnd()).collect();
        let k: Vec<f32> = (0..s.batch * s.kv_len * d).map(|_| rnd()).collect();
        let v: Vec<f32> = (0..s.batch * s.kv_len * d).map(|_| rnd()).collect();
        // Fused layout: [B, N, 3D] for self-attention, [B, Nq, D] + [B, Nk, 2D] for the MAP head.
        let self_attn = s.q_len == s.kv_len;
        let (qbuf, qs, kvbuf, kvs, ko, vo) = if self_attn {
            let mut f = vec![0f32; s.batch * s.q_len * 3 * d];
            for r in 0..s.batch * s.q_len {
                f[r * 3 * d..][..d].copy_from_slice(&q[r * d..][..d]);
                f[r * 3 * d + d..][..d].copy_from_slice(&k[r * d..][..d]);
                f[r * 3 * d + 2 * d..][..d].copy_from_slice(&v[r * d..][..d]);
            }
            (f.clone(), 3 * d, f, 3 * d, d, 2 * d)
        } else {
            let mut f = vec![0f32; s.batch * s.kv_len * 2 * d];
            for r in 0..s.batch * s.kv_len {
                f[r * 2 * d..][..d].copy_from_slice(&k[r * d..][..d]);
                f[r * 2 * d + d..][..d].copy_from_slice(&v[r * d..][..d]);
            }
            (q.clone(), d, f, 2 * d, 0, d)
        };
        let dev = Device::Cpu;
        let qt = Tensor::from_vec(q, (s.batch, s.q_len, d), &dev).unwrap();
        let kt = Tensor::from_vec(k, (s.batch, s.kv_len, d), &dev).unwrap();
        let vt = Tensor::from_vec(v, (s.batch, s.kv_len, d), &dev).unwrap();
        let causal_bias = c.causal.then(|| {
            let n = s.kv_len;
            let m: Vec<f32> = (0..n * n).map(|x| if x % n > x / n { f32::MIN } else { 0.0 }).collect();
            Tensor::from_vec(m, (n, n), &dev).unwrap()
        });
        let mask = if c.causal { AttnMask::Causal } else { AttnMask::None };
        let mut out = vec![0f32; s.batch * s.q_len * d];
        let fused = |kern: u8, out: &mut [f32]| {
            let f = [attention_f32, attention_f32_portable, attention_bf16][kern as usize];
            f(&qbuf, qs, 0, &kvbuf, kvs, ko, &kvbuf, kvs, vo, &s, scale as f32, mask, out);
        };
        let reference = candle_attention(&qt, &kt, &vt, &s, scale, causal_bias.as_ref());
        let reference: Vec<f32> = reference.flatten_all().unwrap().to_vec1().unwrap();
        let max_diff = |out: &[f32]| out.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        fused(2, &mut out);
        let diff_bf16 = max_diff(&out);
        fused(0, &mut out);
        let diff = max_diff(&out);

        let (mut tc, mut tf, mut tb, mut tp) = (vec![], vec![], vec![], vec![]);
        let start = Instant::now();
        // Warm-up once each, then alternate; the portable kernel is timed every 4th round only (it is slow).
        for round in 0.. {
            let t = Instant::now();
            std::hint::black_box(candle_attention(&qt, &kt, &vt, &s, scale, causal_bias.as_ref()));
            tc.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            fused(0, &mut out);
            std::hint::black_box(&out);
            tf.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            fused(2, &mut out);
            std::hint::black_box(&out);
            tb.push(t.elapsed().as_secs_f64() * 1e3);
            if round % 4 == 0 {
                let t = Instant::now();
                fused(1, &mut out);
                std::hint::black_box(&out);
                tp.push(t.elapsed().as_secs_f64() * 1e3);
            }
            if round >= 4 && start.elapsed() > budget {
                break;
            }
        }
        let (c_ms, f_ms, b_ms, p_ms) =
            (median(&mut tc[1..]), median(&mut tf[1..]), median(&mut tb[1..]), median(&mut tp));
        let keys_seen = if c.causal { (s.kv_len * (s.kv_len + 1) / 2) as f64 } else { (s.q_len * s.kv_len) as f64 };
        let gflops = 4.0 * (s.batch * s.heads * s.head_dim) as f64 * keys_seen / (f_ms * 1e6);
        println!(
            "| {} | {c_ms:.3} | {f_ms:.3} | {:.1}× | {gflops:.0} | {b_ms:.3} | {:.1}× | {p_ms:.3} | {diff:.1e}, {diff_bf16:.1e} |",
            c.name,
            c_ms / f_ms,
            c_ms / b_ms
        );
    }
}
