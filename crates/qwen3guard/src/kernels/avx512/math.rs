//! AVX-512 kernels of [`crate::kernels::math`].

use std::arch::x86_64::*;

use crate::kernels::math::{COEFFS, LN2_HI, LN2_LO};

/// `e^x` on 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn exp(x: __m512) -> __m512 {
    // Outside [-104, 89] the result is 0 or infinity in f32; clamping keeps `n` in
    // scalef's range.
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-104.0)),
        _mm512_set1_ps(89.0),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(COEFFS[0]);
    for &c in &COEFFS[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

/// `row[i] = e^((row[i] - max) * scale)`; returns the sum.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn exp_shifted_sum(row: &mut [f32], max: f32, scale: f32) -> f32 {
    let (shift, scale) = (_mm512_set1_ps(max), _mm512_set1_ps(scale));
    let mut sum = _mm512_setzero_ps();
    let mut chunks = row.chunks_exact_mut(16);
    for chunk in &mut chunks {
        let p = chunk.as_mut_ptr();
        let e = exp(_mm512_mul_ps(
            _mm512_sub_ps(_mm512_loadu_ps(p), shift),
            scale,
        ));
        _mm512_storeu_ps(p, e);
        sum = _mm512_add_ps(sum, e);
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        // A masked load/store handles the last partial vector; masked-off lanes are 0.
        let mask: __mmask16 = (1u16 << tail.len()) - 1;
        let p = tail.as_mut_ptr();
        let e = exp(_mm512_mul_ps(
            _mm512_sub_ps(_mm512_maskz_loadu_ps(mask, p), shift),
            scale,
        ));
        let e = _mm512_maskz_mov_ps(mask, e);
        _mm512_mask_storeu_ps(p, mask, e);
        sum = _mm512_add_ps(sum, e);
    }
    _mm512_reduce_add_ps(sum)
}

/// `silu(g) * u`, 16 lanes at a time, the tail masked.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let n = out.len();
    assert!(gate.len() >= n && up.len() >= n);
    let one = _mm512_set1_ps(1.0);
    let mut i = 0;
    while i < n {
        let mask: __mmask16 = if n - i >= 16 {
            !0
        } else {
            (1u16 << (n - i)) - 1
        };
        let g = _mm512_maskz_loadu_ps(mask, gate.as_ptr().add(i));
        let u = _mm512_maskz_loadu_ps(mask, up.as_ptr().add(i));
        let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), g));
        let silu = _mm512_div_ps(g, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(out.as_mut_ptr().add(i), mask, _mm512_mul_ps(silu, u));
        i += 16;
    }
}
