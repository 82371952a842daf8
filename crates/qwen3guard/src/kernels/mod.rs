//! The CPU kernels the network runs on: weight products in each precision's format,
//! attention over the key/value cache, quantization and elementwise math, with their
//! instruction-set variants.
//!
//! [`isa`] picks the instruction set once per process; every kernel's entry point asks it
//! and runs the matching variant: AVX-512 (with BF16 and VNNI where present), AVX2 with
//! FMA, NEON, or the portable loops, which are also the reference the vector paths are tested
//! against. `model/` holds the network in the checkpoint's order and calls only the entry
//! points here. On aarch64, NEON kernels take the f32 and bf16 products.

mod bf16;
pub(crate) mod cache_attention;
mod f32;
mod isa;
pub(crate) mod math;
mod packed;
mod pages;
pub(crate) mod panels;
pub(crate) mod q8;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

pub use bf16::Bf16Matrix;
pub use f32::F32Matrix;
pub use isa::{isa, Isa};
pub use packed::PackedMatrix;
pub use q8::Q8Matrix;
