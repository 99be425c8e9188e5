//! Which instruction set the kernels run with, decided once by the caller (the model's execution plan) and passed
//! down, so every path can be forced and tested on any machine that has it.
//!
//! `FGCLIP_CPU=portable|avx2|avx512|avx512bf16` overrides the detected level ([`Isa::from_env`]); a level the CPU
//! lacks is an error there, never a crash later.

use std::fmt;

/// A CPU feature level, ordered from the plainest to the richest (each includes what the previous ones need).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, no runtime-detected features (what non-x86 targets and old x86 CPUs run).
    Portable,
    /// x86-64 AVX2 + FMA.
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL) on top of AVX2 + FMA.
    Avx512,
    /// AVX-512 with the BF16 dot-product instructions (Zen 4, Sapphire Rapids and later).
    Avx512Bf16,
}

/// The names [`Isa::parse`] accepts, in order.
pub const ISA_NAMES: &str = "portable, avx2, avx512, avx512bf16";

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16];

    /// The richest level this CPU supports.
    pub fn detect() -> Isa {
        Self::ALL.into_iter().rev().find(|i| i.supported()).unwrap_or(Isa::Portable)
    }

    /// Whether this CPU can run the level's kernels.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = || has!("avx2") && has!("fma");
            let avx512 = || avx2() && has!("avx512f") && has!("avx512bw") && has!("avx512vl");
            match self {
                Isa::Portable => true,
                Isa::Avx2 => avx2(),
                Isa::Avx512 => avx512(),
                Isa::Avx512Bf16 => avx512() && has!("avx512bf16"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Portable
        }
    }

    /// Every level this CPU supports (for tests that run each path).
    pub fn all_supported() -> Vec<Isa> {
        Self::ALL.into_iter().filter(|i| i.supported()).collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512bf16",
        }
    }

    /// Parses a level by name and checks that this CPU has it.
    pub fn parse(name: &str) -> Result<Isa, String> {
        let isa = Self::ALL
            .into_iter()
            .find(|i| i.name() == name.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("unknown CPU level {name:?} (expected one of {ISA_NAMES})"))?;
        if !isa.supported() {
            return Err(format!("this CPU cannot run the {name} kernels (it supports up to {})", Isa::detect()));
        }
        Ok(isa)
    }

    /// `FGCLIP_CPU` when set (checked against this CPU), else [`Isa::detect`].
    pub fn from_env() -> Result<Isa, String> {
        match std::env::var("FGCLIP_CPU") {
            Ok(v) if !v.trim().is_empty() => Self::parse(&v).map_err(|e| format!("FGCLIP_CPU: {e}")),
            _ => Ok(Self::detect()),
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detected_level_is_supported_and_names_round_trip() {
        assert!(Isa::detect().supported());
        assert!(Isa::Portable.supported());
        for isa in Isa::all_supported() {
            assert_eq!(Isa::parse(isa.name()).unwrap(), isa);
        }
        assert!(Isa::parse("sse9").unwrap_err().contains("unknown CPU level"));
        // Levels are nested: a supported level implies every plainer one.
        for w in Isa::ALL.windows(2) {
            assert!(!w[1].supported() || w[0].supported(), "{:?} without {:?}", w[1], w[0]);
        }
    }
}
