//! AVX2 + FMA kernel of [`crate::kernels::bf16`]: the weights stay bf16 in memory (half
//! of f32's bandwidth) and are widened in registers, 8 rows' pairs per load: shifting a
//! pair left by 16 bits gives the first feature's f32, masking off its low half the
//! second's. Activations arrive widened to f32 (once per call, by the caller), so each step
//! broadcasts f32 values straight from memory. Products and sums are f32 (bf16 x bf16 is
//! exact in f32), in another order than `vdpbf16ps`.

use std::arch::x86_64::*;

use crate::kernels::avx2::{depth_spans, load_rows, store_rows, DepthSpan};
use crate::kernels::panels::{slice_tiles, GROUP};

/// [`crate::kernels::bf16`]'s block product, on activations already widened to f32.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn block(
    x: &[f32],
    depth: usize,
    group: &[u16],
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    assert!(depth.is_multiple_of(2));
    // In passes over the depth, as the f32 kernel (`DEPTH_BLOCK` is even, so a pass never
    // splits a pair).
    for (start, end) in depth_spans(depth, x.len() / depth.max(1), 2) {
        let span = &DepthSpan { group, start, end };
        slice_tiles!(tile, 8 x 4, whole 8, [1 2], x, depth, span, n, &mut *out, ld);
    }
}

/// `R` activation rows (widened) against the group's outputs `first..first + 8 V`, over
/// the span's input features; a span after the first adds to the sums `out` holds.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize, const V: usize>(
    x: &[f32],
    depth: usize,
    span: &DepthSpan<u16>,
    first: usize,
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    if span.start > 0 {
        load_rows(&mut acc, first, n, out, ld);
    }
    let high = _mm256_set1_epi32(0xffff_0000u32 as i32);
    let (xp, wp) = (x.as_ptr(), span.group.as_ptr().add(2 * first));
    for pair in span.start / 2..span.end / 2 {
        let xv: [[__m256; 2]; R] = std::array::from_fn(|i| {
            let at = xp.add(i * depth + 2 * pair);
            [_mm256_broadcast_ss(&*at), _mm256_broadcast_ss(&*at.add(1))]
        });
        for v in 0..V {
            let w = _mm256_loadu_si256(wp.add(pair * 2 * GROUP + 16 * v) as *const __m256i);
            let even = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
            let odd = _mm256_castsi256_ps(_mm256_and_si256(w, high));
            for (row, x) in acc.iter_mut().zip(&xv) {
                row[v] = _mm256_fmadd_ps(x[0], even, row[v]);
                row[v] = _mm256_fmadd_ps(x[1], odd, row[v]);
            }
        }
    }
    store_rows(&acc, first, n, out, ld);
}
