//! Where and in what precision the model runs; the one place that decides it.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// Precision of weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// 32-bit floats: the reference's precision; parity tests run here.
    #[default]
    F32,
    /// bfloat16 weights: half the memory; products are accumulated in f32.
    Bf16,
    /// 8-bit weights (per-row scales), activations quantized per block of 64 for each
    /// product, and an 8-bit key/value cache (a scale per head and position): a quarter
    /// of f32's memory traffic.
    Q8,
}

impl Precision {
    /// The tensor dtype.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            // Packed on CPU; the tensors around the packed matrices stay f32.
            Precision::Q8 => DType::F32,
        }
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "q8" | "q8_0" | "int8" => Ok(Precision::Q8),
            other => Err(Error::Unsupported(format!(
                "dtype {other:?} (choose f32, bf16 or q8)"
            ))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Q8 => "q8",
        })
    }
}

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Weights and activations precision.
    pub precision: Precision,
}

impl LoadOptions {
    /// The device to run on. CPU for now; a `cuda` feature adds a branch here and nowhere
    /// else.
    pub fn device(&self) -> Result<Device> {
        Ok(Device::Cpu)
    }
}

/// Threads the CPU kernels use (`RAYON_NUM_THREADS`, else every core).
pub fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// Hands memory that the allocator holds but nothing uses back to the system.
///
/// Parsing a 150,000-token `tokenizer.json` allocates and frees more than twice what the
/// tokenizer keeps (about 80 MiB), and glibc keeps freed memory for reuse; done before the
/// weights are loaded, releasing it keeps it out of the process's peak. A long-running
/// process (the server) calls it when it goes idle, so that what a burst of requests freed
/// does not stay in the resident size. It costs a walk over the allocator's free lists
/// (milliseconds); a no-op on other C libraries.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the system; it touches nothing
    // in use and may be called from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
