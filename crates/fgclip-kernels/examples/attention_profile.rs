//! Runs one attention shape in a loop (for `perf record` and A/B timing; CPU time is less noisy than wall time on
//! a loaded machine): `attention_profile BATCH N HEADS DH ITERS [causal] [portable|bf16]`.
use fgclip_kernels::attention::{attention_bf16, attention_f32, attention_f32_portable, AttnMask, AttnShape};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let p = |i: usize| a[i].parse::<usize>().unwrap();
    let s = AttnShape { batch: p(1), q_len: p(2), kv_len: p(2), heads: p(3), head_dim: p(4) };
    let iters = p(5);
    let causal = a.iter().any(|x| x == "causal");
    let portable = a.iter().any(|x| x == "portable");
    let d = s.heads * s.head_dim;
    let buf: Vec<f32> = (0..s.batch * s.q_len * 3 * d).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let mut out = vec![0f32; s.batch * s.q_len * d];
    let mask = if causal { AttnMask::Causal } else { AttnMask::None };
    let f = if portable {
        attention_f32_portable
    } else if a.iter().any(|x| x == "bf16") {
        attention_bf16
    } else {
        attention_f32
    };
    f(&buf, 3 * d, 0, &buf, 3 * d, d, &buf, 3 * d, 2 * d, &s, 0.125, mask, &mut out);
    let c0 = cpu_ms();
    let t = std::time::Instant::now();
    for _ in 0..iters {
        f(&buf, 3 * d, 0, &buf, 3 * d, d, &buf, 3 * d, 2 * d, &s, 0.125, mask, &mut out);
    }
    let ms = t.elapsed().as_secs_f64() * 1e3 / iters as f64;
    let cpu = (cpu_ms() - c0) / iters as f64;
    let keys = if causal { s.q_len * (s.q_len + 1) / 2 } else { s.q_len * s.q_len } as f64;
    let gf = |t: f64| 4.0 * (s.batch * d) as f64 * keys / t / 1e6;
    println!(
        "wall {ms:.3} ms/call ({:.1} GFLOP/s), cpu {cpu:.3} ms/call ({:.1} GFLOP/s per busy core)",
        gf(ms),
        gf(cpu)
    );
}

/// User + system CPU time of the process (all threads) from /proc/self/stat, in ms (10 ms ticks: run long).
fn cpu_ms() -> f64 {
    let st = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = st[st.rfind(')').unwrap() + 2..].split(' ').collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) * 10.0
}
