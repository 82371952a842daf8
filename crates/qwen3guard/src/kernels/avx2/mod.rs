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

/// Input features per pass of a product's rows over a slice of a weight group (a multiple of
/// 4 for the f32 loop's unrolling, and of 2 for bf16's pairs).
///
/// At full depth a slice of the group and the task's rows stop fitting in the core's L2 cache
/// once the depth is the MLP's 3,072: the slice alone is 192 KiB in f32, and 66 rows of
/// activations add 792 KiB, so every slice read the rows from L3 again. In passes of 384
/// features they take 99 KiB and the slice 24 KiB, which fits the 512 KiB L2 of Zen 2 and 3
/// and the 256 KiB of Intel client cores up to the 10th generation. Measured with
/// `QWEN3GUARD_ISA=avx2` on a Zen 4 (1 MiB L2) by the f32 tests'
/// `prefill_products_agree_and_print_rates`, a build without the passes and one with them
/// alternated three times: the down projection of a 512-token prefill (512 x 1,024 x 3,072)
/// went from 134-155 to 147-170 GFLOP/s, of a 115-token verdict from 135-168 to 155-186; the
/// depth-1,024 product did not change beyond the rounds' spread.
/// Passes of 64, 128, 256, 512 and 768 features, timed against 384 in one process through a
/// temporary switch, were each slower on the down projection.
pub(crate) const DEPTH_BLOCK: usize = 384;

/// One weight group and the input features `start..end` a pass of the tiles covers; the
/// tiling macro checks its `len` against the whole group.
pub(crate) struct DepthSpan<'a, T> {
    pub(crate) group: &'a [T],
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl<T> DepthSpan<'_, T> {
    /// The whole group's length.
    pub(crate) fn len(&self) -> usize {
        self.group.len()
    }
}

/// The passes over `depth` features for `rows` activation rows: one pass when there are few
/// rows (`reused_above` or fewer: one register tile, which reads each weight once anyway),
/// passes of [`DEPTH_BLOCK`] otherwise.
pub(crate) fn depth_spans(
    depth: usize,
    rows: usize,
    reused_above: usize,
) -> impl Iterator<Item = (usize, usize)> {
    let block = if rows > reused_above {
        DEPTH_BLOCK
    } else {
        depth.max(1)
    };
    (0..depth)
        .step_by(block)
        .map(move |start| (start, (start + block).min(depth)))
}

/// Loads into `acc` the partial sums a tile stored after an earlier pass: the inverse of
/// [`store_rows`], reading only outputs below `n` (the rest are padding rows and stay 0).
///
/// # Safety
/// AVX2 must be available, and `out` must hold `(R - 1) * ld + n` values.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn load_rows<const R: usize, const V: usize>(
    acc: &mut [[__m256; V]; R],
    first: usize,
    n: usize,
    out: &[f32],
    ld: usize,
) {
    debug_assert!(R == 0 || out.len() >= (R - 1) * ld + n);
    // Plain loops rather than `array::from_fn`: its closure was not inlined (1.6 % of an
    // f32 prefill's samples).
    for (i, row) in acc.iter_mut().enumerate() {
        for (v, a) in row.iter_mut().enumerate() {
            let at = first + 8 * v;
            let lanes = n.saturating_sub(at).min(8);
            if lanes == 8 {
                *a = _mm256_loadu_ps(out.as_ptr().add(i * ld + at));
            } else if lanes > 0 {
                // A partial vector: through a buffer, so no address past `n` is formed.
                let mut buf = [0f32; 8];
                buf[..lanes].copy_from_slice(&out[i * ld + at..][..lanes]);
                *a = _mm256_loadu_ps(buf.as_ptr());
            }
        }
    }
}

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
