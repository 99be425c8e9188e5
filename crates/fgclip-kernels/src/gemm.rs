//! bf16 GEMM for Linear layers: `out[m, n] = epilogue(x[m, k] · Wᵀ)` with W in PyTorch layout `[n, k]`.
//!
//! # Why bf16
//! On AVX-512 CPUs with AVX512-BF16 (Zen 4, Sapphire Rapids, …) `vdpbf16ps` does 32 bf16 multiply-adds per
//! instruction — twice the f32 FMA rate — with f32 accumulation. Weights are rounded to bf16 once (round to
//! nearest even); activations are rounded on the fly while packing. The products of two bf16 values are exact
//! in f32, so the only error beyond the input rounding is f32 accumulation order.
//!
//! # Layout
//! * **B (weights)**, [`PackedBf16`]: column panels of [`NR`] output features. Within a panel, for each k-pair
//!   `p` (k = 2p, 2p+1) there are `NR` u32 words, word `j` = `bf16(W[j, 2p]) | bf16(W[j, 2p+1]) << 16`, i.e.
//!   exactly the operand `vdpbf16ps` wants: one k-pair step of a panel is `NR/16` aligned zmm loads. Odd K is
//!   padded with a zero pair element, the last panel with zero columns. Panel `j` is contiguous (`kp·NR`
//!   words), so any K range of it is contiguous too.
//! * **A (activations)** is converted per block (rows of one task × one K block) into a row-major bf16 buffer
//!   (`_mm512_cvtne2ps_pbh`, 32 values per instruction). Row-major bf16 already has each k-pair adjacent, so
//!   the microkernel broadcasts one 32-bit word per row straight from it (`vdpbf16ps zmm, zmm, [mem]{1to16}`);
//!   no transpose into MR-panels is needed, and the conversion is a pure streaming pass.
//!
//! # Blocking (BLIS order, B pre-packed)
//! ```text
//! task = (row range, column-panel range)          — rayon tasks; rows split for large M, columns for small M
//!   for each K block of KC pairs                  — KC fixed by K alone (see determinism)
//!     convert A[rows, K block] → bf16 buffer      — rows × KC·4 bytes, stays in L2
//!     for each column panel j                     — B micro-panel KC × NR (KC·NR·4 bytes) stays in L1
//!       for each MR rows                          — A micro-panel streams from L2
//!         microkernel MR × NR over the K block    — accumulators start from C (0 for the first block)
//! ```
//! The microkernel keeps MR × NR/16 zmm accumulators (12 × 2 = 24 of the 32 registers); per k-pair it loads
//! NR/16 B vectors and issues MR broadcast-`vdpbf16ps` per vector. Edge tiles: fewer rows use a kernel
//! instantiated for that row count; fewer columns use masked loads/stores of C. The epilogue (bias, GELU,
//! residual) is applied in registers while storing the tile of the last K block, so it costs no memory pass.
//!
//! # Determinism
//! Every output element is one sequential f32 sum over k-pairs in increasing order, starting from 0: a K block
//! starts its accumulators from the partial sum stored in C, so the result depends neither on KC nor on which
//! rows share a tile or a task. Hence a row computed alone is bit-identical to the same row in a batch.
//!
//! # Fallback
//! Without AVX512-BF16 (or on non-x86 targets) a portable kernel computes the same math (bf16-rounded inputs,
//! f32 products and sums in the same order) on the same packed weights.

use std::sync::atomic::{AtomicUsize, Ordering};

#[cfg(target_arch = "x86_64")]
mod avx512;
mod portable;

/// Columns per B panel (two zmm of f32 accumulators per row).
pub const NR: usize = 32;
/// Rows per microkernel tile: 12 × 2 accumulators = 24 zmm, leaving registers for B and the broadcast.
pub const MR: usize = 12;
/// Maximum K block in pairs (KC = 256 k): the B micro-panel is KC·NR·2 bytes = 16 KiB, half the L1.
const KCP_MAX: usize = 128;
/// Rows of one task's A block when splitting rows (A block = MC × KC × 2 bytes ≤ ~200 KiB of the 1 MiB L2).
const MC_MAX: usize = 384;
/// Below this many multiply-adds a call runs on the calling thread (rayon fork/join costs a few µs).
const PAR_MIN_MACS: usize = 1 << 20;

/// Which kernel to run; [`Kernel::Auto`] picks AVX512-BF16 when the CPU has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Auto,
    /// Panics if the CPU lacks AVX512-BF16.
    Avx512Bf16,
    /// Portable Rust kernel (same rounding of the inputs, f32 arithmetic).
    Portable,
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
        bf16_to_f32(if kk % 2 == 0 { word as u16 } else { (word >> 16) as u16 })
    }
    fn panels(&self) -> usize {
        self.n_out.div_ceil(NR)
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
    /// bf16 pairs of row 0, row stride `lda` words.
    pub a: *const u32,
    pub lda: usize,
    /// Panel words of this block, `kp × NR`, 64-byte aligned.
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
        Kernel::Auto => has_avx512_bf16(),
        Kernel::Avx512Bf16 => {
            assert!(has_avx512_bf16(), "Kernel::Avx512Bf16 requested but the CPU lacks AVX512-BF16");
            true
        }
        Kernel::Portable => false,
    };
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
        plan,
    };
    if plan.tasks() == 1 {
        run_task(&args, 0);
    } else {
        use rayon::prelude::*;
        (0..plan.tasks()).into_par_iter().with_max_len(1).for_each(|t| run_task(&args, t));
    }
}

/// How a call is cut into tasks and K blocks. Depends on (m, n, k, threads) for the split, on k alone for KC.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Pairs per K block and the number of K blocks.
    kcp: usize,
    kblocks: usize,
    /// Rows per row block (multiple of MR) and the number of row blocks.
    mc: usize,
    mblocks: usize,
    /// Column panels per column block and the number of column blocks.
    nc_panels: usize,
    nblocks: usize,
}

/// Splits overridable from benchmarks: 0 = automatic.
static FORCE_MC: AtomicUsize = AtomicUsize::new(0);

#[doc(hidden)]
/// Tuning hook for benchmarks: force the row-block size (0 = automatic). Not part of the stable API.
pub fn tune_force_mc(mc: usize) {
    FORCE_MC.store(mc, Ordering::Relaxed);
}

impl Plan {
    fn new(m: usize, n: usize, k: usize, threads: usize) -> Self {
        let kp = k.div_ceil(2);
        // Equal K blocks of at most KCP_MAX pairs; depends on k only.
        let kblocks = kp.div_ceil(KCP_MAX);
        let kcp = kp.div_ceil(kblocks);
        let panels = n.div_ceil(NR);
        let threads = if m * n * k < PAR_MIN_MACS { 1 } else { threads.max(1) };
        let forced = FORCE_MC.load(Ordering::Relaxed);
        // Row split: a multiple of `threads` blocks of ≤ MC_MAX rows. Worth it only when every block still has
        // enough rows to reuse each B micro-panel (loaded from L3) over many tiles; otherwise split columns
        // and let every task convert the (small) whole A.
        let mblocks_rows = threads * m.div_ceil(threads * MC_MAX);
        let mc_rows = m.div_ceil(mblocks_rows).div_ceil(MR) * MR;
        let (mc, nblocks) = if forced > 0 {
            (forced.div_ceil(MR) * MR, 1)
        } else if threads == 1 || mc_rows >= 16 * MR || panels < threads {
            (mc_rows, 1)
        } else {
            (m.div_ceil(MR) * MR, threads.min(panels))
        };
        let mc = mc.min(m.div_ceil(MR) * MR);
        let mblocks = m.div_ceil(mc);
        let nc_panels = panels.div_ceil(nblocks);
        let nblocks = panels.div_ceil(nc_panels);
        Plan { kcp, kblocks, mc, mblocks, nc_panels, nblocks }
    }
    fn tasks(&self) -> usize {
        self.mblocks * self.nblocks
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
    plan: Plan,
}
// SAFETY: the raw pointers come from slices borrowed for the whole call; tasks only read `bias`/`res` and write
// disjoint (row block × column block) regions of `out`.
unsafe impl Sync for Args<'_> {}

thread_local! {
    /// Per-thread bf16 A block, reused across calls (no allocation or page faults on the hot path).
    static A_BUF: std::cell::RefCell<AlignedBuf> = const { std::cell::RefCell::new(AlignedBuf::new()) };
}

/// One task: rows `[m0, m1)` × column panels `[j0, j1)`, all K blocks.
fn run_task(args: &Args, t: usize) {
    let plan = &args.plan;
    let (w, n, k) = (args.w, args.w.n_out, args.w.k);
    let (mb, nb) = (t / plan.nblocks, t % plan.nblocks);
    let m0 = mb * plan.mc;
    let m1 = (m0 + plan.mc).min(args.m);
    let j0 = nb * plan.nc_panels;
    let j1 = (j0 + plan.nc_panels).min(w.panels());
    let rows = m1 - m0;
    // Row stride of the A block in words, a multiple of 16 so every row starts on a cache line.
    let lda = plan.kcp.div_ceil(16) * 16;
    A_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let abuf = buf.reserve(rows * lda);
        for kb in 0..plan.kblocks {
            let p0 = kb * plan.kcp;
            let kp = plan.kcp.min(w.kp - p0);
            let xs = &args.x[m0 * k..m1 * k];
            // Convert A[m0..m1, 2p0 .. 2(p0+kp)) → bf16 pairs.
            #[cfg(target_arch = "x86_64")]
            if args.avx {
                avx512::pack_a(xs, rows, k, p0, kp, abuf, lda);
            } else {
                portable::pack_a(xs, rows, k, p0, kp, abuf, lda);
            }
            #[cfg(not(target_arch = "x86_64"))]
            portable::pack_a(xs, rows, k, p0, kp, abuf, lda);
            let (first, last) = (kb == 0, kb + 1 == plan.kblocks);
            for j in j0..j1 {
                let b = w.panel(j, p0);
                let col = j * NR;
                let nc = NR.min(n - col);
                let mut r0 = 0;
                while r0 < rows {
                    let mr = MR.min(rows - r0);
                    let row = m0 + r0;
                    // Pointers into the caller's slices at this tile; all offsets are in bounds
                    // (row < m, col < n), computed with wrapping_add so no unsafe is needed here.
                    let tile = Tile {
                        kp,
                        a: abuf[r0 * lda..].as_ptr(),
                        lda,
                        b: b.as_ptr(),
                        c: args.out.wrapping_add(row * n + col),
                        ldc: n,
                        nc,
                        first,
                        last,
                        epi: Epi {
                            kind: args.kind,
                            bias: args.bias.wrapping_add(col),
                            res: args.res.wrapping_add(row * n + col),
                            ldr: n,
                        },
                    };
                    // SAFETY: `a` has `mr` rows of `kp` words at stride `lda` inside `abuf`; `b` is the panel's
                    // block (kp·NR words, 64-byte aligned since panels and NR words are); rows
                    // [row, row + mr) < m and columns [col, col + nc) ≤ n lie in `out`/`res`, `col + nc` ≤ n in
                    // `bias`; this task alone writes this tile. `args.avx` implies the CPU check was done.
                    unsafe {
                        #[cfg(target_arch = "x86_64")]
                        if args.avx {
                            avx512::tile(mr, &tile);
                        } else {
                            portable::tile(mr, &tile);
                        }
                        #[cfg(not(target_arch = "x86_64"))]
                        portable::tile(mr, &tile);
                    }
                    r0 += mr;
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

#[inline]
pub(crate) fn quick_gelu_f32(x: f32) -> f32 {
    x / (1.0 + (-1.702 * x).min(88.0).exp())
}
