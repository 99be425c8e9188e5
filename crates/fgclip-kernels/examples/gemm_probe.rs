//! Development aid: GFLOP/s (1 thread, or PROBE_THREADS) of `linear_bf16` measured in *thread CPU time*
//! (/proc/self/task/*/schedstat, summed over threads and divided by the thread count), so other processes competing for the cores do not distort block-size tuning.
//!
//! `cargo run --release -p fgclip-kernels --example gemm_probe -- MxKxN,... MC:KCP,...`
use fgclip_kernels::gemm::{linear_bf16_with, tune_force_blocks, Epilogue, Kernel, PackedBf16};

/// CPU time of all threads of this process (the pool's workers spin only briefly when idle).
fn cpu_ns() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .map(|e| {
            let s = std::fs::read_to_string(e.unwrap().path().join("schedstat")).unwrap_or_default();
            s.split_whitespace().next().map_or(0, |v| v.parse::<u64>().unwrap())
        })
        .sum()
}

fn main() {
    // Run everything on the single worker of a 1-thread pool, so all work is on the thread whose time we read.
    let threads: usize = std::env::var("PROBE_THREADS").map_or(1, |s| s.parse().unwrap());
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(run);
}

fn run() {
    // PROBE_KERNEL=portable probes the portable kernel.
    let kernel = match std::env::var("PROBE_KERNEL").as_deref() {
        Ok("portable") => Kernel::Portable,
        _ => Kernel::Auto,
    };
    let args: Vec<String> = std::env::args().collect();
    let shapes: Vec<(usize, usize, usize)> = args
        .get(1)
        .map_or("12x256x128,197x768x2304,3152x768x2304,1024x768x3072,3152x3072x768", |s| s.as_str())
        .split(',')
        .map(|s| {
            let v: Vec<usize> = s.split('x').map(|t| t.parse().unwrap()).collect();
            (v[0], v[1], v[2])
        })
        .collect();
    let blocks: Vec<(usize, usize)> = args
        .get(2)
        .map_or("0:0", |s| s.as_str())
        .split(',')
        .map(|b| {
            let (m, k) = b.split_once(':').unwrap();
            (m.parse().unwrap(), k.parse().unwrap())
        })
        .collect();
    print!("{:>16}", "M×K×N");
    for (m, k) in &blocks {
        print!(" {:>9}", format!("{m}:{k}"));
    }
    println!("   (GFLOP/s of CPU time / PROBE_THREADS, best of 3)");
    for &(m, k, n) in &shapes {
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 104729) % 1000) as f32 * 1e-3 - 0.5).collect();
        let pw = PackedBf16::from_f32(&w, n, k);
        let mut out = vec![0f32; m * n];
        let flop = 2.0 * (m * n * k) as f64;
        // ≥ 0.4 s per measurement: schedstat advances in scheduler ticks (~4 ms).
        let reps = (1e11 / flop) as usize + 1;
        let mut best = vec![0f64; blocks.len()];
        for _ in 0..3 {
            for (i, &(mc, kcp)) in blocks.iter().enumerate() {
                tune_force_blocks(mc, kcp);
                linear_bf16_with(kernel, &x, m, &pw, Epilogue::None, &mut out);
                let t = cpu_ns();
                for _ in 0..reps {
                    linear_bf16_with(kernel, &x, m, &pw, Epilogue::None, &mut out);
                }
                let dt = (cpu_ns() - t) as f64 * 1e-9 / reps as f64 / rayon::current_num_threads() as f64;
                best[i] = best[i].max(flop / dt / 1e9);
            }
        }
        print!("{:>16}", format!("{m}×{k}×{n}"));
        for b in best {
            print!(" {b:>9.1}");
        }
        println!();
    }
}
