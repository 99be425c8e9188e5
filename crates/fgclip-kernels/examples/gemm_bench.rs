//! GFLOP/s of `linear_bf16` (bf16 inputs, f32 accumulation, bias epilogue) against candle's f32
//! `x.matmul(&w.t())` (the `gemm` crate, no bias), side by side in one process on the same rayon thread count.
//!
//! ```sh
//! cargo run --release -p fgclip-kernels --example gemm_bench [-- OPTIONS]
//!   --threads 2          rayon threads for both (default 2)
//!   --rounds 5           interleaved rounds (default 5)
//!   --filter TEXT        only shapes whose name or M×K×N contains TEXT
//!   --epilogue bias      none | bias | gelu | quick | residual (ours only)
//!   --portable           time our portable kernel instead of AVX512-BF16
//!   --no-candle          skip candle
//!   --blocks MC:KCP,...  tuning: our kernel under forced block sizes (0 = automatic), one column each
//! ```
//! Each round times both implementations back to back (interleaved, so background load hits both alike); the
//! table shows the median over rounds of each implementation's best-of-inner-reps time. For noise-free
//! single-core numbers see the `gemm_probe` example (thread CPU time).

use candle_core::{Device, Tensor};
use fgclip_kernels::gemm::{linear_bf16, linear_bf16_with, Epilogue, Kernel, PackedBf16};
use std::time::Instant;

const SHAPES: &[(&str, usize, usize, usize)] = &[
    ("ViT-B/16 b16 qkv", 3152, 768, 2304),
    ("ViT-B/16 b16 o", 3152, 768, 768),
    ("ViT-B/16 b16 fc1", 3152, 768, 3072),
    ("ViT-B/16 b16 fc2", 3152, 3072, 768),
    ("ViT-B/16 b1 qkv", 197, 768, 2304),
    ("ViT-B/16 b1 o", 197, 768, 768),
    ("ViT-B/16 b1 fc1", 197, 768, 3072),
    ("ViT-B/16 b1 fc2", 197, 3072, 768),
    ("SigLIP2 256 qkv", 256, 768, 2304),
    ("SigLIP2 256 fc1", 256, 768, 3072),
    ("SigLIP2 256 fc2", 256, 3072, 768),
    ("SigLIP2 1024 qkv", 1024, 768, 2304),
    ("SigLIP2 1024 fc1", 1024, 768, 3072),
    ("SigLIP2 1024 fc2", 1024, 3072, 768),
    ("text 77 fc1", 77, 512, 2048),
    ("text 248 qkv", 248, 512, 1536),
    ("text 64 fc1", 64, 768, 3072),
];

fn rand_vec(n: usize, seed: &mut u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Best time (seconds) of `reps` calls of `f`.
fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let threads: usize = opt("--threads").map_or(2, |s| s.parse().unwrap());
    let rounds: usize = opt("--rounds").map_or(5, |s| s.parse().unwrap());
    let filter = opt("--filter");
    let portable = args.iter().any(|a| a == "--portable");
    // `--epilogue none|bias|gelu|quick|residual` (default bias) for our kernel; candle always runs the bare matmul.
    let epi_name = opt("--epilogue").unwrap_or_else(|| "bias".into());
    let no_candle = args.iter().any(|a| a == "--no-candle");
    // Tuning: `--blocks MC:KCP,MC:KCP,…` times our kernel once per block setting (0 = automatic), interleaved
    // in every round, instead of comparing with candle.
    let blocks: Vec<(usize, usize)> = opt("--blocks").map_or(vec![], |s| {
        s.split(',')
            .map(|b| {
                let (m, k) = b.split_once(':').unwrap();
                (m.parse().unwrap(), k.parse().unwrap())
            })
            .collect()
    });
    if !blocks.is_empty() {
        return tune(&blocks, rounds, filter.as_deref());
    }
    // candle's gemm reads the global rayon pool size; pin both to `threads`.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().ok();
    println!(
        "threads {threads}, avx512_bf16 {}, kernel {}, epilogue {epi_name}",
        fgclip_kernels::gemm::has_avx512_bf16(),
        if portable { "portable" } else { "auto" }
    );
    println!("{:<18} {:>16} {:>10} {:>12} {:>8}", "shape", "M×K×N", "ours GF/s", "candle GF/s", "ratio");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for &(name, m, k, n) in SHAPES {
        let dims = format!("{m}×{k}×{n}");
        if let Some(f) = &filter {
            if !name.contains(f.as_str()) && !dims.contains(f.as_str()) {
                continue;
            }
        }
        let x = rand_vec(m * k, &mut seed);
        let w = rand_vec(n * k, &mut seed);
        let bias = rand_vec(n, &mut seed);
        let res = if epi_name == "residual" { rand_vec(m * n, &mut seed) } else { vec![] };
        let epi = match epi_name.as_str() {
            "none" => Epilogue::None,
            "bias" => Epilogue::Bias(&bias),
            "gelu" => Epilogue::BiasGeluTanh(&bias),
            "quick" => Epilogue::BiasQuickGelu(&bias),
            "residual" => Epilogue::BiasResidual(&bias, &res),
            e => panic!("unknown epilogue {e}"),
        };
        let packed = PackedBf16::from_f32(&w, n, k);
        let mut out = vec![0f32; m * n];
        let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu).unwrap();
        let flop = 2.0 * (m * n * k) as f64;
        // Inner reps so each timed batch lasts ≥ ~20 ms.
        let reps = ((20e-3 * 200e9 / flop).ceil() as usize).clamp(2, 200);
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut run_ours = || {
            if portable {
                linear_bf16_with(Kernel::Portable, &x, m, &packed, epi, &mut out)
            } else {
                linear_bf16(&x, m, &packed, epi, &mut out)
            }
        };
        run_ours();
        for _ in 0..rounds {
            ours.push(flop / best_of(reps, &mut run_ours) / 1e9);
            if !no_candle {
                theirs.push(
                    flop / best_of(reps, || {
                        std::hint::black_box(xt.matmul(&wt.t().unwrap()).unwrap());
                    }) / 1e9,
                );
            }
        }
        let o = median(ours);
        let c = if no_candle { f64::NAN } else { median(theirs) };
        println!("{name:<18} {dims:>16} {o:>10.1} {c:>12.1} {:>7.2}×", o / c);
    }
}

fn tune(blocks: &[(usize, usize)], rounds: usize, filter: Option<&str>) {
    print!("{:<18} {:>16}", "shape", "M×K×N");
    for (mc, kcp) in blocks {
        print!(" {:>10}", format!("{mc}:{kcp}"));
    }
    println!("   (GFLOP/s, best of rounds)");
    let mut seed = 1u64;
    for &(name, m, k, n) in SHAPES {
        let dims = format!("{m}×{k}×{n}");
        if let Some(f) = filter {
            if !name.contains(f) && !dims.contains(f) {
                continue;
            }
        }
        let x = rand_vec(m * k, &mut seed);
        let w = rand_vec(n * k, &mut seed);
        let packed = PackedBf16::from_f32(&w, n, k);
        let mut out = vec![0f32; m * n];
        let flop = 2.0 * (m * n * k) as f64;
        let reps = ((20e-3 * 300e9 / flop).ceil() as usize).clamp(2, 200);
        let mut best = vec![0f64; blocks.len()];
        for _ in 0..rounds {
            for (i, &(mc, kcp)) in blocks.iter().enumerate() {
                fgclip_kernels::gemm::tune_force_blocks(mc, kcp);
                let t = best_of(reps, || linear_bf16(&x, m, &packed, Epilogue::None, &mut out));
                best[i] = best[i].max(flop / t / 1e9);
            }
        }
        fgclip_kernels::gemm::tune_force_blocks(0, 0);
        print!("{name:<18} {dims:>16}");
        for b in best {
            print!(" {b:>10.1}");
        }
        println!();
    }
}
