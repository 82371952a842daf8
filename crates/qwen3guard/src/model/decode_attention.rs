//! Attention for a single new position, reading the key/value cache in place.
//!
//! When one token is appended, the general path multiplies a 2-row query block by the
//! whole cached key matrix, and the matrix-product routine copies (packs) that matrix on
//! every call: the cost per token then grows with twice the context. Here each group of
//! query heads that shares a key/value head walks its cached rows once, so a token costs
//! one read of the cache.

use candle_core::{CpuStorage, DType, Storage, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Attention of one query position over the first `total` cached positions.
///
/// `q` is `(1, heads, 1, head_dim)`; `keys`/`values` are the cache buffers
/// `(1, kv_heads, capacity, head_dim)`. Returns `(1, heads, 1, head_dim)`, or `None` when
/// the tensors are not f32 CPU tensors (the caller then takes the general path).
pub fn attend_one(
    q: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    total: usize,
    scale: f32,
) -> Result<Option<Tensor>> {
    let (_, heads, _, dim) = q.dims4()?;
    let (_, kv_heads, capacity, _) = keys.dims4()?;
    if q.dtype() != DType::F32 || !keys.is_contiguous() || !values.is_contiguous() {
        return Ok(None);
    }
    let query: Vec<f32> = q.flatten_all()?.to_vec1()?;
    let (k_guard, k_layout) = keys.storage_and_layout();
    let (v_guard, v_layout) = values.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(k_all)), Storage::Cpu(CpuStorage::F32(v_all))) =
        (&*k_guard, &*v_guard)
    else {
        return Ok(None);
    };
    let k_all = &k_all[k_layout.start_offset()..];
    let v_all = &v_all[v_layout.start_offset()..];
    let rep = heads / kv_heads;
    let group = capacity * dim;
    let mut out = vec![0f32; heads * dim];
    out.par_chunks_mut(rep * dim)
        .enumerate()
        .for_each(|(g, out_group)| {
            let k = &k_all[g * group..g * group + total * dim];
            let v = &v_all[g * group..g * group + total * dim];
            let q_group = &query[g * rep * dim..(g + 1) * rep * dim];
            for (r, o) in out_group.chunks_exact_mut(dim).enumerate() {
                let qh = &q_group[r * dim..(r + 1) * dim];
                let mut scores: Vec<f32> =
                    k.chunks_exact(dim).map(|kt| dot(qh, kt) * scale).collect();
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                for (p, vt) in scores.iter().zip(v.chunks_exact(dim)) {
                    axpy(o, p / sum, vt);
                }
            }
        });
    drop((k_guard, v_guard));
    Ok(Some(Tensor::from_vec(out, (1, heads, 1, dim), q.device())?))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if a.len() % 16 == 0 && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: feature detected; equal lengths that are multiples of 16.
            return unsafe { simd::dot(a, b) };
        }
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(out: &mut [f32], alpha: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if out.len() % 16 == 0 && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: feature detected; equal lengths that are multiples of 16.
            unsafe { simd::axpy(out, alpha, x) };
            return;
        }
    }
    for (o, v) in out.iter_mut().zip(x) {
        *o += alpha * v;
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let mut acc = _mm512_setzero_ps();
        for i in (0..a.len()).step_by(16) {
            acc = _mm512_fmadd_ps(
                _mm512_loadu_ps(a.as_ptr().add(i)),
                _mm512_loadu_ps(b.as_ptr().add(i)),
                acc,
            );
        }
        _mm512_reduce_add_ps(acc)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn axpy(out: &mut [f32], alpha: f32, x: &[f32]) {
        assert_eq!(out.len(), x.len());
        let a = _mm512_set1_ps(alpha);
        for i in (0..out.len()).step_by(16) {
            let o = out.as_mut_ptr().add(i);
            _mm512_storeu_ps(
                o,
                _mm512_fmadd_ps(a, _mm512_loadu_ps(x.as_ptr().add(i)), _mm512_loadu_ps(o)),
            );
        }
    }
}
