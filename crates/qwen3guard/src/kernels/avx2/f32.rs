//! AVX2 + FMA kernel of [`crate::kernels::f32`]: one broadcast activation times 8 weight
//! rows per fused multiply-add, over the depth in passes of
//! [`DEPTH_BLOCK`](crate::kernels::avx2::DEPTH_BLOCK) features when several row tiles reuse
//! the weights.

use std::arch::x86_64::*;

use crate::kernels::avx2::{depth_spans, load_rows, store_rows, DepthSpan};
use crate::kernels::panels::{slice_tiles, GROUP};

/// [`crate::kernels::f32`]'s block product.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn block(
    x: &[f32],
    depth: usize,
    group: &[f32],
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    // Two or three rows (a decoded token's query heads against cached keys) would leave
    // the 6 x 16 tile with 4 or 6 accumulators, too few to cover the multiply-add latency;
    // they take slices of 32 outputs instead.
    let rows = x.len() / depth.max(1);
    for (start, end) in depth_spans(depth, rows, 6) {
        let span = &DepthSpan { group, start, end };
        let out = &mut *out;
        if rows <= 3 {
            slice_tiles!(tile, 8 x 4, whole 8, [1 2 3], x, depth, span, n, out, ld);
        } else {
            slice_tiles!(tile, 8 x 2, whole 8, [1 2 3 4 5 6], x, depth, span, n, out, ld);
        }
    }
}

/// `R` activation rows against the group's outputs `first..first + 8 V`, over the span's
/// input features; a span after the first adds to the sums `out` holds.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize, const V: usize>(
    x: &[f32],
    depth: usize,
    span: &DepthSpan<f32>,
    first: usize,
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    if span.start > 0 {
        load_rows(&mut acc, first, n, out, ld);
    }
    let (xp, wp) = (x.as_ptr(), span.group.as_ptr().add(first));
    let rows: [*const f32; R] = std::array::from_fn(|i| xp.add(i * depth));
    let step = |acc: &mut [[__m256; V]; R], k: usize| {
        let w: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(wp.add(k * GROUP + 8 * v)));
        for (row, &xr) in acc.iter_mut().zip(&rows) {
            let xv = _mm256_broadcast_ss(&*xr.add(k));
            for (a, &wv) in row.iter_mut().zip(&w) {
                *a = _mm256_fmadd_ps(xv, wv, *a);
            }
        }
    };
    // Four input features per loop turn: the compiler does not unroll the const-generic
    // loops itself, and the turn's counter and row addresses cost as many instructions as
    // the multiply-adds of one feature (measured: 6 % more prefill throughput on Zen 3).
    let body = span.start + (span.end - span.start) / 4 * 4;
    for k in (span.start..body).step_by(4) {
        step(&mut acc, k);
        step(&mut acc, k + 1);
        step(&mut acc, k + 2);
        step(&mut acc, k + 3);
    }
    for k in body..span.end {
        step(&mut acc, k);
    }
    store_rows(&acc, first, n, out, ld);
}
