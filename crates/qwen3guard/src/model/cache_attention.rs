//! Causal attention of new positions over a sequence's key/value cache, read in place.
//!
//! The general tensor path materialises the whole `(heads, new, cached)` score matrix, a
//! mask of the same size and an f32 copy for the softmax, and its matrix product packs the
//! cached keys again on every call, so that one appended token costs two reads of the
//! cache and a 2,048-token prompt holds gigabytes of scores. Here each task takes one
//! key/value head and a block of up to 16 new positions (with the query heads that share
//! that key/value head), scores only the keys each position may see, and sums the values
//! straight from the cache buffers: memory stays proportional to the block, and the work
//! to the causal triangle.

use candle_core::{CpuStorage, DType, Storage, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::model::softmax::exp_normalizer;

/// New positions per task: small enough that a short chunk still spreads over the cores
/// (tasks = key/value heads x blocks), large enough that the cached keys of one head are
/// read once for many query rows.
const POSITION_BLOCK: usize = 16;

/// The sizes every task shares.
struct Shape {
    len: usize,
    dim: usize,
    /// Query heads per key/value head.
    rep: usize,
    /// Positions cached before the new ones.
    offset: usize,
    scale: f32,
}

/// Attention of `q`'s new positions over the cache buffers.
///
/// `q` is `(1, heads, len, head_dim)` (already rotated); `keys` and `values` are the whole
/// cache buffers `(1, kv_heads, capacity, head_dim)` whose first `offset + len` positions
/// are filled (the new ones included). Returns `(1, len, heads * head_dim)`, ready for the
/// output projection, or `None` when the tensors are not contiguous f32 CPU tensors with a
/// head size the kernels take (the caller then takes the general path).
pub fn attend_cached(
    q: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    offset: usize,
    scale: f32,
) -> Result<Option<Tensor>> {
    let (_, heads, len, dim) = q.dims4()?;
    let (_, kv_heads, capacity, _) = keys.dims4()?;
    let usable = q.dtype() == DType::F32
        && dim % 16 == 0
        && heads % kv_heads == 0
        && offset + len <= capacity
        && [q, keys, values].iter().all(|t| t.is_contiguous());
    if !usable {
        return Ok(None);
    }
    let (q_guard, q_layout) = q.storage_and_layout();
    let (k_guard, k_layout) = keys.storage_and_layout();
    let (v_guard, v_layout) = values.storage_and_layout();
    let (
        Storage::Cpu(CpuStorage::F32(q_all)),
        Storage::Cpu(CpuStorage::F32(k_all)),
        Storage::Cpu(CpuStorage::F32(v_all)),
    ) = (&*q_guard, &*k_guard, &*v_guard)
    else {
        return Ok(None);
    };
    let q_all = &q_all[q_layout.start_offset()..];
    let k_all = &k_all[k_layout.start_offset()..];
    let v_all = &v_all[v_layout.start_offset()..];
    let shape = Shape {
        len,
        dim,
        rep: heads / kv_heads,
        offset,
        scale,
    };
    let blocks = len.div_ceil(POSITION_BLOCK);
    let visible = (offset + len) * dim;
    let results: Vec<(usize, usize, Vec<f32>)> = (0..kv_heads * blocks)
        .into_par_iter()
        .map(|task| {
            let (g, b) = (task / blocks, task % blocks);
            let i0 = b * POSITION_BLOCK;
            let i1 = (i0 + POSITION_BLOCK).min(len);
            let head_keys = &k_all[g * capacity * dim..][..visible];
            let head_values = &v_all[g * capacity * dim..][..visible];
            let block = attend_block(&shape, q_all, g, i0..i1, head_keys, head_values);
            (g, i0, block)
        })
        .collect();
    drop((q_guard, k_guard, v_guard));

    // Scatter each block's rows (position-major, then query head) to `(len, heads, dim)`.
    let mut out = vec![0f32; len * heads * dim];
    for (g, i0, block) in results {
        for (r, row) in block.chunks_exact(dim).enumerate() {
            let (i, h) = (i0 + r / shape.rep, g * shape.rep + r % shape.rep);
            out[(i * heads + h) * dim..][..dim].copy_from_slice(row);
        }
    }
    Ok(Some(Tensor::from_vec(out, (1, len, heads * dim), q.device())?))
}

/// One key/value head `g` and new positions `positions`: rows `(position, query head)`,
/// each attending to the cached keys up to and including its own position.
fn attend_block(
    s: &Shape,
    q_all: &[f32],
    g: usize,
    positions: std::ops::Range<usize>,
    keys: &[f32],
    values: &[f32],
) -> Vec<f32> {
    let (dim, rep) = (s.dim, s.rep);
    let rows = positions.len() * rep;
    let first = positions.start;
    let query = |r: usize| -> &[f32] {
        let (i, h) = (first + r / rep, g * rep + r % rep);
        &q_all[(h * s.len + i) * dim..][..dim]
    };
    let limit = |r: usize| s.offset + first + r / rep + 1;
    let width = s.offset + positions.end;

    // 1. Scores of every row against the keys it may see, 4 rows x 4 keys at a time.
    let mut scores = vec![0f32; rows * width];
    for r0 in (0..rows).step_by(4) {
        let rr = (rows - r0).min(4);
        let x: [&[f32]; 4] = std::array::from_fn(|i| query(r0 + i.min(rr - 1)));
        for j0 in (0..limit(r0 + rr - 1)).step_by(4) {
            let cc = (limit(r0 + rr - 1) - j0).min(4);
            let w: [&[f32]; 4] = std::array::from_fn(|j| &keys[(j0 + j.min(cc - 1)) * dim..][..dim]);
            let sums = dots(x, rr, w);
            for (i, sum_row) in sums.iter().enumerate().take(rr) {
                for (j, &v) in sum_row.iter().enumerate().take(cc) {
                    scores[(r0 + i) * width + j0 + j] = v * s.scale;
                }
            }
        }
    }

    // 2. Softmax numerators per row; keys past a row's own position weigh 0.
    let normalizers: Vec<f32> = scores
        .chunks_exact_mut(width)
        .enumerate()
        .map(|(r, row)| {
            let (seen, future) = row.split_at_mut(limit(r));
            future.fill(0.0);
            exp_normalizer(seen)
        })
        .collect();

    // 3. Weighted sums of the values, 4 rows at a time, then normalised.
    let mut out = vec![0f32; rows * dim];
    for r0 in (0..rows).step_by(4) {
        let rr = (rows - r0).min(4);
        let seen = limit(r0 + rr - 1);
        let p: [&[f32]; 4] =
            std::array::from_fn(|i| &scores[(r0 + i.min(rr - 1)) * width..][..seen]);
        weighted_sum(p, rr, &values[..seen * dim], &mut out[r0 * dim..(r0 + rr) * dim]);
    }
    for (row, inv) in out.chunks_exact_mut(dim).zip(normalizers) {
        row.iter_mut().for_each(|v| *v *= inv);
    }
    out
}

/// The 4 x 4 dot products of query rows `x[i]` with key rows `w[j]` (one length, a
/// multiple of 16 on the vector path); only the first `live` rows of `x` are distinct,
/// the others repeat the last (and are ignored). The keys are adjacent rows of the cache,
/// visited four at a time.
fn dots(x: [&[f32]; 4], live: usize, w: [&[f32]; 4]) -> [[f32; 4]; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: feature detected at run time; lengths are checked inside.
            return unsafe {
                match live {
                    1 => avx512::dots::<1>(x, w),
                    2 => avx512::dots::<2>(x, w),
                    3 => avx512::dots::<3>(x, w),
                    _ => avx512::dots::<4>(x, w),
                }
            };
        }
    }
    let _ = live;
    x.map(|xr| w.map(|wr| xr.iter().zip(wr).map(|(a, b)| a * b).sum()))
}

/// `out[i] = sum_j p[i][j] * values[j]` for the first `live` rows of `p` (`out` holds
/// `live` rows of the values' width; `p` rows all have one length, the values' count).
fn weighted_sum(p: [&[f32]; 4], live: usize, values: &[f32], out: &mut [f32]) {
    let dim = out.len() / live;
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && dim % 16 == 0 {
            // SAFETY: feature detected at run time; lengths are checked inside.
            unsafe {
                match live {
                    1 => avx512::weighted_sum::<1>(p, values, out, dim),
                    2 => avx512::weighted_sum::<2>(p, values, out, dim),
                    3 => avx512::weighted_sum::<3>(p, values, out, dim),
                    _ => avx512::weighted_sum::<4>(p, values, out, dim),
                }
            }
            return;
        }
    }
    for (i, o) in out.chunks_exact_mut(dim).enumerate() {
        o.fill(0.0);
        for (&w, v) in p[i].iter().zip(values.chunks_exact(dim)) {
            for (a, &b) in o.iter_mut().zip(v) {
                *a += w * b;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// `R` query rows against 4 key rows: `R x 4` accumulators, each step loading 16
    /// lanes of every row once.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dots<const R: usize>(x: [&[f32]; 4], w: [&[f32]; 4]) -> [[f32; 4]; 4] {
        let len = x[0].len();
        assert!(len % 16 == 0 && x.iter().chain(&w).all(|r| r.len() == len));
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        let mut k = 0;
        while k < len {
            // The next four keys follow these in the cache: fetching them now keeps memory
            // streaming while these are summed (the walk across four rows at once defeats
            // the hardware prefetcher). A prefetch never faults, even past the end.
            for row in &w {
                _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().wrapping_add(4 * len + k) as *const i8);
            }
            let wv: [__m512; 4] = std::array::from_fn(|j| _mm512_loadu_ps(w[j].as_ptr().add(k)));
            for (i, row) in acc.iter_mut().enumerate() {
                let xv = _mm512_loadu_ps(x[i].as_ptr().add(k));
                for (a, &v) in row.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(xv, v, *a);
                }
            }
            k += 16;
        }
        let mut out = [[0f32; 4]; 4];
        for (o, row) in out.iter_mut().zip(&acc) {
            *o = row.map(|a| _mm512_reduce_add_ps(a));
        }
        out
    }

    /// `R` rows of weights against the value rows, 64 (then 16) columns at a time: the
    /// accumulators stay in registers for the whole pass over the values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weighted_sum<const R: usize>(
        p: [&[f32]; 4],
        values: &[f32],
        out: &mut [f32],
        dim: usize,
    ) {
        let count = p[0].len();
        assert!(values.len() >= count * dim && out.len() >= R * dim && dim % 16 == 0);
        assert!(p.iter().all(|row| row.len() == count));
        let mut c0 = 0;
        while c0 + 64 <= dim {
            columns::<R, 4>(p, count, values, out, dim, c0);
            c0 += 64;
        }
        while c0 < dim {
            columns::<R, 1>(p, count, values, out, dim, c0);
            c0 += 16;
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn columns<const R: usize, const Z: usize>(
        p: [&[f32]; 4],
        count: usize,
        values: &[f32],
        out: &mut [f32],
        dim: usize,
        c0: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); Z]; R];
        let vp = values.as_ptr().add(c0);
        for j in 0..count {
            let v: [__m512; Z] = std::array::from_fn(|z| _mm512_loadu_ps(vp.add(j * dim + 16 * z)));
            for (i, row) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*p[i].get_unchecked(j));
                for (a, &vz) in row.iter_mut().zip(&v) {
                    *a = _mm512_fmadd_ps(w, vz, *a);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (z, a) in row.iter().enumerate() {
                _mm512_storeu_ps(out.as_mut_ptr().add(i * dim + c0 + 16 * z), *a);
            }
        }
    }
}
