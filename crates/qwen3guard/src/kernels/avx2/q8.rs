//! AVX2 kernels of [`crate::kernels::q8`]: the activation quantizer, the byte weighted
//! sum of attention's 8-bit values and the 8-bit block product.
//!
//! AVX2 has no `vpdpbusd`; its byte product `vpmaddubsw` multiplies unsigned by signed
//! bytes and adds pairs into saturating 16-bit lanes, which the stored `q + 128` weights
//! times activations up to 127 would overflow. So the weights are turned back into signed
//! `q` (flipping the top bit) and each product is taken as `|x| * (q * sign(x))`: both
//! factors are at most 127, a pair sums to at most 32,258 and never saturates, and the
//! integer sums equal the VNNI kernel's minus its `128 * sum(x)` offset, which therefore
//! needs no correction here. `vpmaddwd` by ones widens each pair sum to 32 bits.

use std::arch::x86_64::*;

use crate::kernels::avx2::{max_lanes, store_rows};
use crate::kernels::panels::{slice_tiles, GROUP};
use crate::kernels::q8::{GroupView, QuantizedView, BLOCK};

/// [`crate::kernels::q8::quantize_run`] on 8 lanes, the tail on the same scale with the
/// same rounding (divide, round halves to even, clamp), so both paths give equal bytes.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn quantize_run(values: &[f32], out: &mut [i8]) -> (f32, i32) {
    assert!(out.len() == values.len());
    let body = values.len() / 8 * 8;
    let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut max = _mm256_setzero_ps();
    for c in (0..body).step_by(8) {
        let v = _mm256_loadu_ps(values.as_ptr().add(c));
        max = _mm256_max_ps(max, _mm256_and_ps(v, magnitude));
    }
    let max = values[body..]
        .iter()
        .fold(max_lanes(max), |m, v| m.max(v.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let (divisor, low, high) = (
        _mm256_set1_ps(scale),
        _mm256_set1_epi32(-127),
        _mm256_set1_epi32(127),
    );
    let mut sums = _mm256_setzero_si256();
    for c in (0..body).step_by(8) {
        // The rounding mode is the default one: to nearest, halves to even.
        let q = _mm256_cvtps_epi32(_mm256_div_ps(
            _mm256_loadu_ps(values.as_ptr().add(c)),
            divisor,
        ));
        let q = _mm256_min_epi32(_mm256_max_epi32(q, low), high);
        sums = _mm256_add_epi32(sums, q);
        let words = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        _mm_storel_epi64(
            out.as_mut_ptr().add(c) as *mut __m128i,
            _mm_packs_epi16(words, words),
        );
    }
    let mut lanes = [0i32; 8];
    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, sums);
    let mut sum: i32 = lanes.iter().sum();
    for (o, &v) in out[body..].iter_mut().zip(&values[body..]) {
        *o = (v / scale).round_ties_even().clamp(-127.0, 127.0) as i8;
        sum += *o as i32;
    }
    (scale, sum)
}

/// [`crate::kernels::q8::weighted_bytes`] for every row, 32 (then 8) output columns at a
/// time with 2 rows' accumulators in registers for the whole pass over the values; `dim`
/// is a multiple of 8.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn weighted_bytes(
    weights: &[f32],
    count: usize,
    values: &[u8],
    dim: usize,
    out: &mut [f32],
) {
    let rows = out.len() / dim;
    assert!(weights.len() == rows * count && values.len() >= count * dim);
    assert!(dim.is_multiple_of(8));
    for r0 in (0..rows).step_by(2) {
        let (w, o) = (&weights[r0 * count..], &mut out[r0 * dim..]);
        let mut c0 = 0;
        while c0 < dim {
            match (rows - r0 >= 2, dim - c0 >= 32) {
                (true, true) => weighted_columns::<2, 4>(w, count, values, dim, o, c0),
                (true, false) => weighted_columns::<2, 1>(w, count, values, dim, o, c0),
                (false, true) => weighted_columns::<1, 4>(w, count, values, dim, o, c0),
                (false, false) => weighted_columns::<1, 1>(w, count, values, dim, o, c0),
            }
            c0 += if dim - c0 >= 32 { 32 } else { 8 };
        }
    }
}

/// Columns `c0..c0 + 8 Z` of `R` output rows.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn weighted_columns<const R: usize, const Z: usize>(
    weights: &[f32],
    count: usize,
    values: &[u8],
    dim: usize,
    out: &mut [f32],
    c0: usize,
) {
    assert!(weights.len() >= (R - 1) * count + count && out.len() >= (R - 1) * dim + c0 + 8 * Z);
    let op = out.as_mut_ptr().add(c0);
    let mut acc: [[__m256; Z]; R] =
        std::array::from_fn(|i| std::array::from_fn(|z| _mm256_loadu_ps(op.add(i * dim + 8 * z))));
    let vp = values.as_ptr().add(c0);
    for j in 0..count {
        let v: [__m256; Z] = std::array::from_fn(|z| {
            let bytes = _mm_loadl_epi64(vp.add(j * dim + 8 * z) as *const __m128i);
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes))
        });
        for (i, row) in acc.iter_mut().enumerate() {
            let w = _mm256_broadcast_ss(weights.get_unchecked(i * count + j));
            for (a, &vz) in row.iter_mut().zip(&v) {
                *a = _mm256_fmadd_ps(w, vz, *a);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (z, a) in row.iter().enumerate() {
            _mm256_storeu_ps(op.add(i * dim + 8 * z), *a);
        }
    }
}

/// [`crate::kernels::q8`]'s block product.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn block(x: &QuantizedView, w: &GroupView, n: usize, out: &mut [f32], ld: usize) {
    let depth = w.depth;
    let m = x.data.len() / depth;
    assert!(w.scales.len() == GROUP && depth.is_multiple_of(BLOCK));
    assert!(x.scales.len() == m * x.blocks && x.blocks * BLOCK == depth);
    let view = Operands { x, w };
    slice_tiles!(tile, 8 x 4, whole 8, [1 2], &x.data, depth, &view, n, out, ld);
}

/// The two operands of a block product, passed to the tiles as one value.
struct Operands<'a> {
    x: &'a QuantizedView<'a>,
    w: &'a GroupView<'a>,
}

impl Operands<'_> {
    /// What the tiling macro checks against `GROUP * depth`.
    fn len(&self) -> usize {
        self.w.data.len()
    }
}

/// Rows `x[..R]` (the rows of `ops.x` from the one `x` starts at) against the group's
/// outputs `first..first + 8 V`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize, const V: usize>(
    x: &[i8],
    depth: usize,
    ops: &Operands,
    first: usize,
    n: usize,
    out: &mut [f32],
    ld: usize,
) {
    let (q, w) = (ops.x, ops.w);
    // Which row of the view `x` starts at: the macro passes sub-slices of `q.data`.
    let r0 = (x.as_ptr() as usize - q.data.as_ptr() as usize) / depth;
    let (xp, wp) = (x.as_ptr(), w.data.as_ptr().add(4 * first));
    let (flip, ones) = (_mm256_set1_epi8(-128), _mm256_set1_epi16(1));
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    for b in 0..q.blocks {
        let mut sums = [[_mm256_setzero_si256(); V]; R];
        for quad in b * BLOCK / 4..(b + 1) * BLOCK / 4 {
            let xq: [[__m256i; 2]; R] = std::array::from_fn(|i| {
                let bits = (xp.add(i * depth + 4 * quad) as *const i32).read_unaligned();
                let v = _mm256_set1_epi32(bits);
                [v, _mm256_abs_epi8(v)]
            });
            for v in 0..V {
                let stored =
                    _mm256_loadu_si256(wp.add(quad * 4 * GROUP + 32 * v) as *const __m256i);
                let signed = _mm256_xor_si256(stored, flip);
                for (row, [xv, magnitude]) in sums.iter_mut().zip(&xq) {
                    let pairs = _mm256_maddubs_epi16(*magnitude, _mm256_sign_epi8(signed, *xv));
                    row[v] = _mm256_add_epi32(row[v], _mm256_madd_epi16(pairs, ones));
                }
            }
        }
        for (i, (a_row, s_row)) in acc.iter_mut().zip(&sums).enumerate() {
            let scale = _mm256_set1_ps(*q.scales.get_unchecked((r0 + i) * q.blocks + b));
            for (a, &s) in a_row.iter_mut().zip(s_row) {
                *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, *a);
            }
        }
    }
    for row in acc.iter_mut() {
        for (v, a) in row.iter_mut().enumerate() {
            *a = _mm256_mul_ps(*a, _mm256_loadu_ps(w.scales.as_ptr().add(first + 8 * v)));
        }
    }
    store_rows(&acc, first, n, out, ld);
}
