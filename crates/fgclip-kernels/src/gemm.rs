//! bf16 GEMM for Linear layers: `out[m, n] = epilogue(x[m, k] · Wᵀ)` with W in PyTorch layout `[n, k]`.
//!
//! # Why bf16
//! On AVX-512 CPUs with AVX512-BF16 (Zen 4, Sapphire Rapids, …) `vdpbf16ps` does 32 bf16 multiply-adds per
//! instruction at the issue rate of a 16-wide f32 FMA, i.e. twice the f32 FLOP rate, accumulating in f32.
//! Weights are rounded to bf16 once (round to nearest even); activations are rounded on the fly while
//! packing. A product of two bf16 values is exact in f32, so beyond the input rounding the only error is the
//! f32 accumulation.
//!
//! # Layout
//! * **B (weights)**, [`PackedBf16`]: column panels of [`NR`] = 48 output features. Within a panel, for each
//!   k-pair `p` (k = 2p, 2p+1) there are `NR` u32 words, word `j` = `bf16(W[j, 2p]) | bf16(W[j, 2p+1]) << 16`
//!   — exactly the operand `vdpbf16ps` wants, so one k-pair step of a panel is three aligned zmm loads. Odd K
//!   is padded with a zero pair element, the last panel with zero columns. Panel `j` is contiguous (`kp·NR`
//!   words), so any K range of it is contiguous too.
//! * **A (activations)** is converted per block (rows of one task × one K block) into a row-major bf16 buffer
//!   (`vcvtne2ps2bf16`, 32 values per instruction). Row-major bf16 already has each k-pair adjacent, so the
//!   microkernel broadcasts one 32-bit word per row straight from it; no transpose into MR-row panels is
//!   needed and the conversion is a pure streaming pass.
//!
//! # Blocking (BLIS loop order, B pre-packed)
//! ```text
//! task = (row range, column-panel range)        rayon tasks: rows split for large M, columns for batch-1 M
//!   for each K block of ≤ 1536 k                fixed by K alone; K ≤ 1536 is a single block
//!     convert A[rows, K block] → bf16           rows × KC·2 bytes (L2, or L3 for big row blocks)
//!     for each column panel j                   B micro-panel KC × 48 (KC·96 bytes): L2, reused by all rows
//!       for each 8 rows                         A micro-panel 8 × KC (KC·16 bytes)
//!         microkernel 8 × 48 over the K block   accumulators start from C (from 0 for the first block)
//! ```
//! The microkernel keeps MR × NR/16 = 8 × 3 = 24 zmm accumulators; per k-pair it loads 3 B vectors and, per
//! row, broadcasts the A pair and issues 3 `vdpbf16ps`. That needs only ~5 bytes per cycle of A and B, which
//! L2 (even L3) streams easily, so K blocks are large: measured on Zen 4, fewer passes over C beat keeping
//! the B micro-panel in L1. Edge tiles: fewer rows use a kernel instantiated for that row count; fewer
//! columns use masked loads/stores. The epilogue (bias, GELU, residual) is applied in registers while the last
//! K block stores its tile, so it costs no memory pass. Measured single-core efficiency: ~93% of the
//! `vdpbf16ps` peak for batch-1 shapes, ~90% for large M.
//!
//! # Determinism
//! Every output element is one sequential f32 sum over k-pairs in increasing order, starting from 0 (a K block
//! starts its accumulators from the partial sum stored in C). So the result depends neither on the K
//! blocking, nor on which rows share a tile or a task, nor on the thread count: a row computed alone is
//! bit-identical to the same row in a batch.
//!
//! # Fallback
//! Without AVX512-BF16 (or off x86_64) a portable kernel computes the same math — bf16-rounded inputs, exact
//! products, the same summation order (per pair the odd k first, as `vdpbf16ps`) — on the same packed
//! weights, as a plain f32 GEMM that LLVM vectorises (built for AVX2+FMA as well, picked at runtime). Its
//! results are bit-identical to the AVX512-BF16 kernel except for the GELU epilogues (different `exp`).

use std::sync::atomic::{AtomicUsize, Ordering};

#[cfg(target_arch = "x86_64")]
mod avx512;
mod portable;

/// Columns per B panel (three zmm of f32 accumulators per row).
pub const NR: usize = 48;
/// Rows per microkernel tile: 8 × 3 = 24 zmm accumulators, leaving registers for B and the broadcast.
/// (Measured on Zen 4: 8×48 ≈ 6×64 ≈ 9×48 > 12×32 by ~5%.)
pub const MR: usize = 8;
/// Maximum K block in pairs (KC = 1536 k), see the module docs.
const KCP_MAX: usize = 768;
/// Rows of one task when splitting rows. Not critical (A streams well from L2/L3); smaller blocks give rayon
/// more pieces to balance.
const MC_MAX: usize = 384;
/// Rows per task below which the rows are not split (each B micro-panel, fetched from L3, should serve many
/// tiles); batch-1 shapes split columns instead.
const MIN_ROWS_PER_TASK: usize = 192;
/// A column block has ≥ this many NR-panels (384 columns) unless N is smaller.
const MIN_COL_PANELS: usize = 8;
/// Below this many multiply-adds a call runs on the calling thread (rayon fork/join costs a few µs).
const PAR_MIN_MACS: usize = 1 << 20;

/// Which kernel to run; [`Kernel::Auto`] picks AVX512-BF16 when the CPU has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Auto,
    /// Panics if the CPU lacks AVX512-BF16.
    Avx512Bf16,
    /// Portable Rust kernel (same rounding of the inputs, f32 arithmetic); on x86_64 it uses an AVX2+FMA build
    /// of itself when the CPU has those.
    Portable,
    /// The portable kernel without any runtime-detected CPU features (what non-x86 targets and old x86 CPUs
    /// run).
    PortableBaseline,
}

impl Kernel {
    /// The GEMM kernel of a CPU level chosen by the caller: AVX512-BF16 where it exists, the portable kernel's
    /// AVX2+FMA build on AVX2 and AVX-512 CPUs, the plain portable kernel below.
    pub fn for_isa(isa: crate::cpu::Isa) -> Kernel {
        use crate::cpu::Isa;
        match isa {
            Isa::Avx512Bf16 => Kernel::Avx512Bf16,
            Isa::Avx2 | Isa::Avx512 => Kernel::Portable,
            Isa::Portable => Kernel::PortableBaseline,
        }
    }
}

/// True when the AVX512-BF16 kernel can run on this CPU (runtime detection; false on non-x86_64).
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// f32 → bf16, round to nearest even; NaN stays (quiet) NaN, subnormals flush to signed zero — the same
/// results as `vcvtne2ps2bf16`, so the packed weights and the portable path match the AVX-512 path exactly.
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if (b & 0x7fff_ffff) > 0x7f80_0000 {
        return ((b >> 16) | 0x40) as u16;
    }
    if b & 0x7f80_0000 == 0 {
        return ((b >> 16) & 0x8000) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// bf16 → f32 (exact).
#[inline]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// 64-byte aligned, zero-initialised u32 storage (so every panel row is one aligned zmm load).
pub(crate) struct AlignedBuf {
    lines: Vec<Line>,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u32; 16]);

impl AlignedBuf {
    pub(crate) const fn new() -> Self {
        Self { lines: Vec::new() }
    }
    fn zeroed(words: usize) -> Self {
        Self { lines: vec![Line([0; 16]); words.div_ceil(16)] }
    }
    /// Grows to at least `words` (contents unspecified) and returns the storage.
    fn reserve(&mut self, words: usize) -> &mut [u32] {
        let lines = words.div_ceil(16);
        if self.lines.len() < lines {
            self.lines = vec![Line([0; 16]); lines];
        }
        self.as_mut_slice()
    }
    fn as_slice(&self) -> &[u32] {
        // SAFETY: `Line` is `repr(C)` of 16 u32 without padding, so the Vec's storage is a valid u32 array.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<u32>(), self.lines.len() * 16) }
    }
    fn as_mut_slice(&mut self) -> &mut [u32] {
        // SAFETY: as in `as_slice`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<u32>(), self.lines.len() * 16) }
    }
}

/// A Linear layer's weight `W [n_out, k]` (PyTorch layout, `y = x·Wᵀ + b`), rounded to bf16 (nearest even) and
/// packed once into [`NR`]-column panels of interleaved k-pairs (see the module docs).
pub struct PackedBf16 {
    n_out: usize,
    k: usize,
    /// k-pairs, `ceil(k / 2)`.
    kp: usize,
    data: AlignedBuf,
}

impl PackedBf16 {
    /// Packs `w` (`n_out × k`, row-major). Runs on the current rayon pool.
    pub fn from_f32(w: &[f32], n_out: usize, k: usize) -> Self {
        assert_eq!(w.len(), n_out * k, "weight slice is not n_out × k");
        assert!(k > 0, "k must be ≥ 1");
        let kp = k.div_ceil(2);
        let panels = n_out.div_ceil(NR);
        let mut data = AlignedBuf::zeroed(panels * kp * NR);
        let panel_words = kp * NR;
        let words = &mut data.as_mut_slice()[..panels * panel_words];
        use rayon::prelude::*;
        words.par_chunks_mut(panel_words).enumerate().for_each(|(j, panel)| {
            let cols = NR.min(n_out - j * NR);
            for c in 0..cols {
                let row = &w[(j * NR + c) * k..(j * NR + c + 1) * k];
                for p in 0..kp {
                    let lo = f32_to_bf16(row[2 * p]) as u32;
                    let hi = if 2 * p + 1 < k { f32_to_bf16(row[2 * p + 1]) as u32 } else { 0 };
                    panel[p * NR + c] = lo | (hi << 16);
                }
            }
        });
        Self { n_out, k, kp, data }
    }
    pub fn n_out(&self) -> usize {
        self.n_out
    }
    pub fn k(&self) -> usize {
        self.k
    }
    /// Bytes of packed storage.
    pub fn bytes(&self) -> usize {
        self.data.lines.len() * std::mem::size_of::<Line>()
    }
    /// The bf16-rounded weight `W[j, kk]` as f32 (for references and tests).
    pub fn get(&self, j: usize, kk: usize) -> f32 {
        assert!(j < self.n_out && kk < self.k);
        let word = self.data.as_slice()[(j / NR) * self.kp * NR + (kk / 2) * NR + j % NR];
        bf16_to_f32((word >> (16 * (kk & 1))) as u16)
    }
    /// Words `[p0, p0 + len)` pairs of panel `j`.
    fn panel(&self, j: usize, p0: usize) -> &[u32] {
        let start = (j * self.kp + p0) * NR;
        &self.data.as_slice()[start..(j + 1) * self.kp * NR]
    }
}

/// What to do with the product tile before it is stored. `Bias*` slices have `n_out` elements, the residual
/// `m × n_out`; the residual is added after the bias.
#[derive(Clone, Copy, Debug)]
pub enum Epilogue<'a> {
    None,
    Bias(&'a [f32]),
    /// `gelu(x + b)` with the tanh approximation, `0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))`.
    BiasGeluTanh(&'a [f32]),
    /// `quick_gelu(x + b) = x·σ(1.702x)`.
    BiasQuickGelu(&'a [f32]),
    /// `x + b + residual`.
    BiasResidual(&'a [f32], &'a [f32]),
}

/// Epilogue as the kernels see it: kind plus raw pointers already offset to the tile's first column/row.
#[derive(Clone, Copy)]
pub(crate) struct Epi {
    pub kind: EpiKind,
    pub bias: *const f32,
    pub res: *const f32,
    /// Row stride of the residual (= n_out).
    pub ldr: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum EpiKind {
    None,
    Bias,
    GeluTanh,
    QuickGelu,
    Residual,
}

/// One microkernel call: `c[r, ..nc] (+)= Σ_p a[r·lda + p] ⋅ b[p·NR ..]` for the rows of the tile, then the
/// epilogue if `last`.
#[derive(Clone, Copy)]
pub(crate) struct Tile {
    /// k-pairs in this block.
    pub kp: usize,
    /// Row 0 of the A block: bf16 pairs at row stride `lda` words (AVX-512), or the portable path's widened
    /// f32 values at stride `2·lda` words.
    pub a: *const u32,
    pub lda: usize,
    /// Panel words of this block, `kp × NR`, 64-byte aligned. (The portable path reads its widened copy.)
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub b: *const u32,
    pub c: *mut f32,
    pub ldc: usize,
    /// Valid columns, 1..=NR.
    pub nc: usize,
    /// First K block: accumulate from 0 instead of loading C.
    pub first: bool,
    /// Last K block: apply the epilogue.
    pub last: bool,
    pub epi: Epi,
}

/// `out[m, n_out] = epilogue(x[m, k] · Wᵀ)`, bf16 inputs, f32 accumulation. Uses all threads of the current
/// rayon pool; picks the AVX512-BF16 kernel when available.
pub fn linear_bf16(x: &[f32], m: usize, w: &PackedBf16, epi: Epilogue, out: &mut [f32]) {
    linear_bf16_with(Kernel::Auto, x, m, w, epi, out)
}

/// [`linear_bf16`] with an explicit kernel choice (tests force [`Kernel::Portable`]).
pub fn linear_bf16_with(kernel: Kernel, x: &[f32], m: usize, w: &PackedBf16, epi: Epilogue, out: &mut [f32]) {
    let (n, k) = (w.n_out, w.k);
    assert_eq!(x.len(), m * k, "x is not m × k");
    assert_eq!(out.len(), m * n, "out is not m × n_out");
    let (kind, bias, res) = match epi {
        Epilogue::None => (EpiKind::None, None, None),
        Epilogue::Bias(b) => (EpiKind::Bias, Some(b), None),
        Epilogue::BiasGeluTanh(b) => (EpiKind::GeluTanh, Some(b), None),
        Epilogue::BiasQuickGelu(b) => (EpiKind::QuickGelu, Some(b), None),
        Epilogue::BiasResidual(b, r) => (EpiKind::Residual, Some(b), Some(r)),
    };
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "bias is not n_out long");
    }
    if let Some(r) = res {
        assert_eq!(r.len(), m * n, "residual is not m × n_out");
    }
    if m == 0 || n == 0 {
        return;
    }
    let avx = match kernel {
        Kernel::Auto => has_avx512_bf16(), // always false off x86_64
        Kernel::Avx512Bf16 => {
            assert!(has_avx512_bf16(), "Kernel::Avx512Bf16 requested but the CPU lacks AVX512-BF16");
            true
        }
        Kernel::Portable | Kernel::PortableBaseline => false,
    };
    let baseline = kernel == Kernel::PortableBaseline;
    let plan = Plan::new(m, n, k, rayon::current_num_threads());
    let args = Args {
        x,
        m,
        w,
        kind,
        bias: bias.map_or(std::ptr::null(), |b| b.as_ptr()),
        res: res.map_or(std::ptr::null(), |r| r.as_ptr()),
        out: out.as_mut_ptr(),
        avx,
        baseline,
        plan,
    };
    if plan.tasks() == 1 {
        run_task(&args, 0);
    } else {
        use rayon::prelude::*;
        (0..plan.tasks()).into_par_iter().with_max_len(1).for_each(|t| run_task(&args, t));
    }
}

/// How a call is cut into tasks and K blocks. The K blocking depends on k alone; the task split on
/// (m, n, k, threads) — which is harmless for determinism since no task boundary changes any element's sum.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Pairs per K block and the number of K blocks.
    kcp: usize,
    kblocks: usize,
    /// MR-row panels in total and the number of row blocks they are dealt into (as evenly as possible).
    mpanels: usize,
    mblocks: usize,
    /// NR-column panels in total and the number of column blocks.
    npanels: usize,
    nblocks: usize,
}

/// Block sizes overridable from benchmarks: 0 = automatic.
static FORCE_MC: AtomicUsize = AtomicUsize::new(0);
static FORCE_KCP: AtomicUsize = AtomicUsize::new(0);

#[doc(hidden)]
/// Tuning hook for benchmarks: force the row-block size (rows; this also disables the column split) and the
/// K block in pairs; 0 = automatic. Not part of the stable API. Results do not depend on either (module docs).
pub fn tune_force_blocks(mc: usize, kcp: usize) {
    FORCE_MC.store(mc, Ordering::Relaxed);
    FORCE_KCP.store(kcp, Ordering::Relaxed);
}

impl Plan {
    fn new(m: usize, n: usize, k: usize, threads: usize) -> Self {
        let kp = k.div_ceil(2);
        // Equal K blocks of at most KCP_MAX pairs; depends on k only.
        let kcp_max = match FORCE_KCP.load(Ordering::Relaxed) {
            0 => KCP_MAX,
            f => f,
        };
        let kblocks = kp.div_ceil(kcp_max);
        let kcp = kp.div_ceil(kblocks);
        let mpanels = m.div_ceil(MR);
        let npanels = n.div_ceil(NR);
        let threads = if m * n * k < PAR_MIN_MACS { 1 } else { threads.max(1) };
        let forced = FORCE_MC.load(Ordering::Relaxed);
        // Row split: a multiple of `threads` blocks of ≤ MC_MAX rows. Worth it only while every block keeps
        // enough rows to reuse each B micro-panel over many tiles; otherwise (batch-1 shapes) split columns and
        // let every task convert the whole (small) A — converting is ~1% of the multiply work per task.
        let mblocks_min = m.div_ceil(MC_MAX);
        let mblocks_rows = threads * m.div_ceil(threads * MC_MAX);
        let (mblocks, nblocks) = if forced > 0 {
            (m.div_ceil(forced), 1)
        } else if threads == 1 {
            (mblocks_min, 1)
        } else if m / mblocks_rows >= MIN_ROWS_PER_TASK || npanels < threads {
            (mblocks_rows, 1)
        } else {
            // Column blocks of ≥ MIN_COL_PANELS panels where N allows, up to 4 tasks per thread so a thread
            // slowed by other load can hand work over; row blocks stay ≤ MC_MAX rows (bounds the A buffer).
            let tasks = threads * (npanels / (threads * MIN_COL_PANELS)).clamp(1, 4);
            (mblocks_min, tasks.div_ceil(mblocks_min).min(npanels))
        };
        Plan { kcp, kblocks, mpanels, mblocks: mblocks.clamp(1, mpanels), npanels, nblocks }
    }
    fn tasks(&self) -> usize {
        self.mblocks * self.nblocks
    }
    /// Rows `[m0, m1)` and column panels `[j0, j1)` of task `t` (blocks as even as MR/NR granularity allows).
    fn task(&self, t: usize, m: usize) -> (usize, usize, usize, usize) {
        let (mb, nb) = (t / self.nblocks, t % self.nblocks);
        let m0 = mb * self.mpanels / self.mblocks * MR;
        let m1 = ((mb + 1) * self.mpanels / self.mblocks * MR).min(m);
        let j0 = nb * self.npanels / self.nblocks;
        let j1 = (nb + 1) * self.npanels / self.nblocks;
        (m0, m1, j0, j1)
    }
}

struct Args<'a> {
    x: &'a [f32],
    m: usize,
    w: &'a PackedBf16,
    kind: EpiKind,
    bias: *const f32,
    res: *const f32,
    /// Output base; tasks write disjoint tiles.
    out: *mut f32,
    avx: bool,
    /// Portable path without runtime-detected features.
    baseline: bool,
    plan: Plan,
}
// SAFETY: the raw pointers come from slices borrowed for the whole call; tasks only read `bias`/`res` and write
// disjoint (row block × column block) regions of `out`.
unsafe impl Sync for Args<'_> {}

thread_local! {
    /// Per-thread bf16 A block, reused across calls (no allocation or page faults on the hot path).
    static A_BUF: std::cell::RefCell<AlignedBuf> = const { std::cell::RefCell::new(AlignedBuf::new()) };
    /// Portable path only: the current B micro-panel widened to f32.
    static B_F32: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One task: rows `[m0, m1)` × column panels `[j0, j1)`, all K blocks.
fn run_task(args: &Args, t: usize) {
    let plan = &args.plan;
    let (w, n, k) = (args.w, args.w.n_out, args.w.k);
    let (m0, m1, j0, j1) = plan.task(t, args.m);
    let rows = m1 - m0;
    // Row stride of the A block in words, a multiple of 16 so every row starts on a cache line.
    let lda = plan.kcp.div_ceil(16) * 16;
    A_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        // The portable path stores A as f32 (two words per pair).
        let abuf = buf.reserve(rows * lda * if args.avx { 1 } else { 2 });
        for kb in 0..plan.kblocks {
            let p0 = kb * plan.kcp;
            let kp = plan.kcp.min(w.kp - p0);
            // Convert A[m0..m1, 2p0 .. 2(p0+kp)) → bf16 pairs.
            let xs = &args.x[m0 * k..m1 * k];
            if args.avx {
                #[cfg(target_arch = "x86_64")]
                avx512::pack_a(xs, rows, k, p0, kp, abuf, lda);
            } else {
                portable::pack_a(xs, rows, k, p0, kp, abuf, lda);
            }
            let (first, last) = (kb == 0, kb + 1 == plan.kblocks);
            for j in j0..j1 {
                let b = &w.panel(j, p0)[..kp * NR];
                let col = j * NR;
                let tile = |r0: usize| Tile {
                    kp,
                    a: abuf[r0 * lda * if args.avx { 1 } else { 2 }..].as_ptr(),
                    lda,
                    b: b.as_ptr(),
                    // Offsets into the caller's slices at this tile (in bounds: row < m, col < n); wrapping_add
                    // keeps the pointer arithmetic itself safe.
                    c: args.out.wrapping_add((m0 + r0) * n + col),
                    ldc: n,
                    nc: NR.min(n - col),
                    first,
                    last,
                    epi: Epi {
                        kind: args.kind,
                        bias: args.bias.wrapping_add(col),
                        res: args.res.wrapping_add((m0 + r0) * n + col),
                        ldr: n,
                    },
                };
                // SAFETY (both branches): a tile at r0 has `mr` (portable: `rows`) rows of `kp` words at stride
                // `lda` (portable: f32 values at stride 2·lda) inside `abuf`;
                // `b` is this block of the panel (kp·NR words, 64-byte aligned: panels and NR-word rows are);
                // rows [m0 + r0, m0 + r0 + mr) < m and columns [col, col + nc), col + nc ≤ n, lie in
                // `out`/`res` and `bias`; this task alone writes them. `args.avx` implies the CPU check.
                if args.avx {
                    #[cfg(target_arch = "x86_64")]
                    for r0 in (0..rows).step_by(MR) {
                        unsafe { avx512::tile(MR.min(rows - r0), &tile(r0)) };
                    }
                } else {
                    B_F32.with(|bf| {
                        let mut bf = bf.borrow_mut();
                        portable::widen_b(b, kp, &mut bf);
                        // The portable kernel tiles rows itself (6 at a time), so it gets the whole block.
                        unsafe { portable::tile(rows, &tile(0), &bf, args.baseline) };
                    });
                }
            }
        }
    });
}

/// Epilogue math shared by the portable kernel and the tests: `x·σ(t)` forms of the two GELUs.
#[inline]
pub(crate) fn gelu_tanh_f32(x: f32) -> f32 {
    // 0.5·(1 + tanh(u)) = σ(2u)
    let u2 = 2.0 * 0.797_884_6_f32 * (x + 0.044715 * x * x * x);
    x / (1.0 + (-u2).min(88.0).exp())
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::{gelu_tanh as avx512_gelu_tanh, quick_gelu as avx512_quick_gelu};

#[inline]
pub(crate) fn quick_gelu_f32(x: f32) -> f32 {
    x / (1.0 + (-1.702 * x).min(88.0).exp())
}
