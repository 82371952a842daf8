//! AVX-512 kernels of [`crate::kernels::q8`].

use std::arch::x86_64::*;

use crate::kernels::panels::{store_tile, GROUP};
use crate::kernels::q8::{GroupView, QuantizedView, BLOCK};

/// [`crate::kernels::q8::quantize_run`] on 16 lanes: a prompt quantizes millions of activations
/// per pass, too many for a scalar loop.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn quantize_run(values: &[f32], out: &mut [i8]) -> (f32, i32) {
    assert!(out.len() == values.len());
    let chunks = values.len().div_ceil(16);
    let mask = |c: usize| ((1u32 << (values.len() - 16 * c).min(16)) - 1) as __mmask16;
    let load = |c: usize| _mm512_maskz_loadu_ps(mask(c), values.as_ptr().add(16 * c));
    let mut max = _mm512_setzero_ps();
    for c in 0..chunks {
        max = _mm512_max_ps(max, _mm512_abs_ps(load(c)));
    }
    let max = _mm512_reduce_max_ps(max);
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let (divisor, low, high) = (
        _mm512_set1_ps(scale),
        _mm512_set1_epi32(-127),
        _mm512_set1_epi32(127),
    );
    let mut sum = _mm512_setzero_si512();
    for c in 0..chunks {
        // The rounding mode is the default one: to nearest, halves to even.
        let q = _mm512_cvtps_epi32(_mm512_div_ps(load(c), divisor));
        let q = _mm512_min_epi32(_mm512_max_epi32(q, low), high);
        sum = _mm512_add_epi32(sum, q);
        _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add(16 * c), mask(c), q);
    }
    (scale, _mm512_reduce_add_epi32(sum))
}

/// [`crate::kernels::q8::weighted_bytes`] for `R` rows of weights, 64 (then 16) output columns at a
/// time, the accumulators in registers for the whole pass over the values.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn weighted_bytes<const R: usize>(
    weights: &[f32],
    count: usize,
    values: &[u8],
    dim: usize,
    out: &mut [f32],
) {
    assert!(weights.len() >= R * count && out.len() >= R * dim);
    assert!(values.len() >= count * dim && dim.is_multiple_of(16));
    let mut c0 = 0;
    while c0 + 64 <= dim {
        weighted_columns::<R, 4>(weights, count, values, dim, out, c0);
        c0 += 64;
    }
    while c0 < dim {
        weighted_columns::<R, 1>(weights, count, values, dim, out, c0);
        c0 += 16;
    }
}

/// Columns `c0..c0 + 16 Z` of the `R` output rows.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn weighted_columns<const R: usize, const Z: usize>(
    weights: &[f32],
    count: usize,
    values: &[u8],
    dim: usize,
    out: &mut [f32],
    c0: usize,
) {
    let op = out.as_mut_ptr().add(c0);
    let mut acc: [[__m512; Z]; R] =
        std::array::from_fn(|i| std::array::from_fn(|z| _mm512_loadu_ps(op.add(i * dim + 16 * z))));
    let vp = values.as_ptr().add(c0);
    for j in 0..count {
        let v: [__m512; Z] = std::array::from_fn(|z| {
            let bytes = _mm_loadu_si128(vp.add(j * dim + 16 * z) as *const __m128i);
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes))
        });
        for (i, row) in acc.iter_mut().enumerate() {
            let w = _mm512_set1_ps(*weights.get_unchecked(i * count + j));
            for (a, &vz) in row.iter_mut().zip(&v) {
                *a = _mm512_fmadd_ps(w, vz, *a);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (z, a) in row.iter().enumerate() {
            _mm512_storeu_ps(op.add(i * dim + 16 * z), *a);
        }
    }
}

/// Activation rows per register tile: 3 rows x 4 vectors of i32 sums, as many f32
/// accumulators, and the 4 weight vectors.
const MR: usize = 3;

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn block(x: &QuantizedView, w: &GroupView, n: usize, out: &mut [f32], ld: usize) {
    let depth = w.depth;
    let m = x.data.len() / depth;
    assert!(
        w.data.len() == GROUP * depth && w.scales.len() == GROUP && depth.is_multiple_of(BLOCK)
    );
    assert!(x.scales.len() == m * x.blocks && x.offsets.len() == m && x.blocks * BLOCK == depth);
    assert!(n <= GROUP && (m == 0 || out.len() >= (m - 1) * ld + n));
    let mut r = 0;
    while r < m {
        let rows = (m - r).min(MR);
        let out = &mut out[r * ld..];
        match rows {
            1 => tile::<1>(x, r, w, n, out, ld),
            2 => tile::<2>(x, r, w, n, out, ld),
            _ => tile::<3>(x, r, w, n, out, ld),
        }
        r += rows;
    }
}

/// Rows `r0..r0 + R` of `x` against the whole group.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const R: usize>(
    x: &QuantizedView,
    r0: usize,
    w: &GroupView,
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    let depth = w.depth;
    let (xp, wp) = (x.data.as_ptr().add(r0 * depth), w.data.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    for b in 0..x.blocks {
        let mut sums = [[_mm512_setzero_si512(); 4]; R];
        for quad in b * BLOCK / 4..(b + 1) * BLOCK / 4 {
            let wv: [__m512i; 4] = std::array::from_fn(|z| {
                _mm512_loadu_si512(wp.add(quad * 4 * GROUP + 64 * z) as *const _)
            });
            for (i, row) in sums.iter_mut().enumerate() {
                let xv = _mm512_set1_epi32(
                    (xp.add(i * depth + 4 * quad) as *const i32).read_unaligned(),
                );
                for (s, &v) in row.iter_mut().zip(&wv) {
                    *s = _mm512_dpbusd_epi32(*s, v, xv);
                }
            }
        }
        for (i, (a_row, s_row)) in acc.iter_mut().zip(&sums).enumerate() {
            let scale = _mm512_set1_ps(*x.scales.get_unchecked((r0 + i) * x.blocks + b));
            for (a, &s) in a_row.iter_mut().zip(s_row) {
                *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, *a);
            }
        }
    }
    // out = weight scale * (sum - 128 * offset of the row).
    let wscale: [__m512; 4] =
        std::array::from_fn(|z| _mm512_loadu_ps(w.scales.as_ptr().add(16 * z)));
    for (i, row) in acc.iter_mut().enumerate() {
        let offset = _mm512_set1_ps(128.0 * x.offsets[r0 + i]);
        for (a, &s) in row.iter_mut().zip(&wscale) {
            *a = _mm512_mul_ps(_mm512_sub_ps(*a, offset), s);
        }
    }
    store_tile(&acc, n, out, ld);
}
