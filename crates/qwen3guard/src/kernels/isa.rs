//! The instruction set the kernels use, chosen once per process.
//!
//! Detection runs on first use and the answer is kept, so a product asks a cached value
//! instead of querying the processor. `QWEN3GUARD_ISA` (`portable`, `avx2`, `avx512`,
//! `neon`) caps the choice below what the processor has, for tests and comparisons; it
//! never raises it (a kernel for an instruction set the processor lacks would fault).

use std::fmt;
use std::sync::OnceLock;

/// Instruction-set levels, ordered: on one architecture, each includes what the kernels use
/// of the ones below it ([`Isa::supported`] lists a processor's own ladder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust loops: any processor, and the reference for the vector paths.
    Portable,
    /// x86-64 AVX2 with FMA (Haswell, Zen 1-3 and later).
    Avx2,
    /// AVX-512 F and BW: f32 products and the elementwise math on 16 lanes; bf16 and 8-bit
    /// products run on the AVX2 kernels.
    Avx512,
    /// AVX-512 with VNNI: 8-bit products on `vpdpbusd`.
    Avx512Vnni,
    /// AVX-512 with VNNI and BF16: bf16 products on `vdpbf16ps` as well.
    Avx512Bf16,
    /// aarch64 Advanced SIMD (every ARMv8-A processor: Graviton, Ampere, Apple Silicon): f32
    /// and bf16 products on 4 lanes; the 8-bit products, the attention over the cache and
    /// the elementwise math run the portable loops.
    Neon,
}

impl Isa {
    /// The name used by `QWEN3GUARD_ISA`, `--version` and `bench --json`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512-vnni",
            Isa::Avx512Bf16 => "avx512-bf16",
            Isa::Neon => "neon",
        }
    }

    /// What this processor supports, ignoring any cap.
    pub fn detected() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512bw") {
                return match (has!("avx512vnni"), has!("avx512bf16")) {
                    (true, true) => Isa::Avx512Bf16,
                    (true, false) => Isa::Avx512Vnni,
                    _ => Isa::Avx512,
                };
            }
            if has!("avx2") && has!("fma") {
                return Isa::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            return Isa::Neon;
        }
        Isa::Portable
    }

    /// Every level this processor can run, lowest first: the paths a kernel test compares.
    pub fn supported() -> Vec<Isa> {
        let ladder: &[Isa] = if cfg!(target_arch = "aarch64") {
            &[Isa::Portable, Isa::Neon]
        } else {
            &[
                Isa::Portable,
                Isa::Avx2,
                Isa::Avx512,
                Isa::Avx512Vnni,
                Isa::Avx512Bf16,
            ]
        };
        let top = Isa::detected();
        ladder.iter().copied().filter(|&l| l <= top).collect()
    }

    /// The highest level this processor can run that is at most `cap` (a cap naming another
    /// architecture's level leaves the portable loops on an ARM processor and no cap on an
    /// x86 one, since the x86 levels are ordered below NEON).
    fn capped(cap: Isa) -> Isa {
        Isa::supported()
            .into_iter()
            .filter(|&l| l <= cap)
            .max()
            .unwrap_or(Isa::Portable)
    }

    /// The cap a `QWEN3GUARD_ISA` value sets; `None` for a value it does not name.
    fn cap(value: &str) -> Option<Isa> {
        match value.trim().to_ascii_lowercase().as_str() {
            "portable" | "scalar" => Some(Isa::Portable),
            "avx2" => Some(Isa::Avx2),
            "avx512" | "avx512-vnni" | "avx512-bf16" => Some(Isa::Avx512Bf16),
            "neon" | "native" | "" => Some(Isa::Neon),
            _ => None,
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The instruction set every kernel uses in this process: what the processor has, capped
/// by `QWEN3GUARD_ISA` when it is set. An unknown value is ignored with a warning on
/// standard error, once, rather than failing a load over a tuning variable.
pub fn isa() -> Isa {
    static CHOSEN: OnceLock<Isa> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let detected = Isa::detected();
        match std::env::var("QWEN3GUARD_ISA") {
            Ok(value) => match Isa::cap(&value) {
                Some(cap) => Isa::capped(cap),
                None => {
                    eprintln!(
                        "warning: QWEN3GUARD_ISA={value:?} is not portable, avx2, avx512 or neon; using {detected}"
                    );
                    detected
                }
            },
            Err(_) => detected,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI names the path its processor must run (`.ci/expected-isa`, from /proc/cpuinfo);
    /// the kernel tests compare every path of [`Isa::supported`], so that path must be
    /// among them. Elsewhere there is nothing to compare with.
    #[test]
    fn the_path_ci_expects_is_among_those_the_kernel_tests_compare() {
        let Ok(expected) = std::env::var("QWEN3GUARD_EXPECT_ISA") else {
            eprintln!("skipped: QWEN3GUARD_EXPECT_ISA is not set (.ci/run sets it)");
            return;
        };
        let supported = Isa::supported();
        assert!(
            supported.iter().any(|level| level.name() == expected),
            "this processor should run the {expected} kernels, but the tests compare only {:?}",
            supported.iter().map(|l| l.name()).collect::<Vec<_>>()
        );
        assert_eq!(
            Isa::detected().name(),
            expected,
            "the highest path detected is the one the processor's flags name"
        );
    }

    #[test]
    fn a_cap_only_lowers_the_level() {
        assert_eq!(Isa::cap("portable"), Some(Isa::Portable));
        assert_eq!(Isa::cap(" AVX2 "), Some(Isa::Avx2));
        assert_eq!(Isa::cap("avx512"), Some(Isa::Avx512Bf16));
        assert_eq!(Isa::capped(Isa::Portable), Isa::Portable);
        assert_eq!(Isa::capped(Isa::Neon), Isa::detected());
        // An x86 cap on an ARM processor leaves the portable loops; on x86 it is a plain min.
        let avx2 = if cfg!(target_arch = "aarch64") {
            Isa::Portable
        } else {
            Isa::detected().min(Isa::Avx2)
        };
        assert_eq!(Isa::capped(Isa::Avx2), avx2);
        assert_eq!(Isa::cap("sse9"), None);
        assert!(isa() <= Isa::detected());
    }
}
