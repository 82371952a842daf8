//! The AVX2 + FMA variants of the kernels, for x86-64 processors without AVX-512 (Zen 1-3,
//! Intel client parts, older Xeons).
//!
//! The weights keep the [`Panels`](crate::kernels::Panels) layout the AVX-512 kernels
//! read; a register holds 8 outputs instead of 16, so a tile covers a slice of the group for
//! several activation rows, or the whole group for one row (decoding, where the weights'
//! bandwidth is the limit and 8 accumulators keep both FMA units busy). The 16 registers
//! bound a tile: 6 rows x 2 accumulators for f32 (12 accumulators, 2 weight vectors and a
//! broadcast, as in the classic 6 x 16 Haswell GEMM tile), 2 x 4 for bf16 and 8 bits, which
//! also need registers to widen or sign the weights. Every function requires AVX2
//! and FMA; callers check [`crate::kernels::isa`] first.

pub(crate) mod bf16;
pub(crate) mod f32;
pub(crate) mod math;
pub(crate) mod q8;

use std::arch::x86_64::*;

crate::kernels::panels::store_rows_fn!(__m256, 8, _mm256_storeu_ps, "avx2,fma");

/// The sum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn sum_lanes(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// The largest of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn max_lanes(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}
