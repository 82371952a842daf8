//! Causal attention of new positions over a sequence's key/value cache, read in place.
//!
//! The general tensor path materialises the whole `(heads, new, cached)` score matrix, a
//! mask of the same size and an f32 copy for the softmax, and its matrix product packs the
//! cached keys again on every call, so that one appended token costs two reads of the
//! cache and a 2,048-token prompt holds gigabytes of scores. Here each task takes one
//! key/value head and a block of up to 16 new positions (with the query heads that share
//! that key/value head), scores the keys those positions may see page by page, with the
//! weight products' own kernels (pages hold keys in the weights' layout), and sums the
//! values straight from the pages: memory stays proportional to the block, and the work
//! to the causal triangle. Queries meet keys in the cache's precision (bf16 queries and
//! keys in bf16, as in a bf16 reference); scores, weights and sums are f32.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::cache::{KvCache, KvPrecision, Rows, KEY_GROUP, PAGE};
use crate::model::math::exp_normalizer;

/// New positions per task: small enough that a short chunk still spreads over the cores
/// (tasks = key/value heads x blocks), large enough that the cached keys of one head are
/// read once for many query rows.
const POSITION_BLOCK: usize = 16;

/// The sizes every task shares.
struct Shape {
    heads: usize,
    dim: usize,
    /// Query heads per key/value head.
    rep: usize,
    /// Positions cached before the new ones.
    offset: usize,
    scale: f32,
}

/// A cached element type: f32, or bf16 bits.
trait Element: Copy + Send + Sync + 'static {
    /// Whether the bits are bf16 (widened by a shift) rather than f32.
    const BF16: bool;
    /// The rows of a page, if they are of this type.
    fn rows(rows: &Rows) -> Option<&[Self]>;
    fn widen(self) -> f32;
    /// A query value in this precision (bf16 queries meet bf16 keys, as in a bf16
    /// reference).
    fn narrow(value: f32) -> Self;
    /// Scores of query rows `x` (`depth` long) against the first `n` keys of one group of
    /// a page: `out[r * ld + c]`.
    fn scores(x: &[Self], depth: usize, group: &[Self], n: usize, out: &mut [f32], ld: usize);
}

impl Element for f32 {
    const BF16: bool = false;
    fn rows(rows: &Rows) -> Option<&[f32]> {
        match rows {
            Rows::F32(v) => Some(v),
            Rows::Bf16(_) => None,
        }
    }
    fn widen(self) -> f32 {
        self
    }
    fn narrow(value: f32) -> f32 {
        value
    }
    fn scores(x: &[f32], depth: usize, group: &[f32], n: usize, out: &mut [f32], ld: usize) {
        crate::model::f32::block(x, depth, group, n, out, ld);
    }
}

impl Element for u16 {
    const BF16: bool = true;
    fn rows(rows: &Rows) -> Option<&[u16]> {
        match rows {
            Rows::Bf16(v) => Some(v),
            Rows::F32(_) => None,
        }
    }
    fn widen(self) -> f32 {
        half::bf16::from_bits(self).to_f32()
    }
    fn narrow(value: f32) -> u16 {
        half::bf16::from_f32(value).to_bits()
    }
    fn scores(x: &[u16], depth: usize, group: &[u16], n: usize, out: &mut [f32], ld: usize) {
        crate::model::bf16::block(x, depth, group, n, out, ld);
    }
}

/// Attention of `len` new positions over layer `layer` of `cache`.
///
/// `q` is rows `(len, heads * head_dim)` (already rotated) for positions `first..first + len`,
/// whose keys and values (and all before) are already written to the cache. Returns
/// `(len, heads * head_dim)`, ready for the output projection.
pub fn attend_cached(
    q: &[f32],
    cache: &KvCache,
    layer: usize,
    (heads, first, len): (usize, usize, usize),
    scale: f32,
) -> Result<Vec<f32>> {
    match cache.precision() {
        KvPrecision::F32 => attend::<f32>(q, cache, layer, (heads, first, len), scale),
        KvPrecision::Bf16 => attend::<u16>(q, cache, layer, (heads, first, len), scale),
    }
}

fn attend<E: Element>(
    q: &[f32],
    cache: &KvCache,
    layer: usize,
    (heads, first, len): (usize, usize, usize),
    scale: f32,
) -> Result<Vec<f32>> {
    let dim = q.len() / (heads * len).max(1);
    let kv_heads = cache.kv_heads();
    let shape = Shape {
        heads,
        dim,
        rep: heads / kv_heads.max(1),
        offset: first,
        scale,
    };
    let visible = (shape.offset + len).div_ceil(PAGE);
    let pages = cache.pages(layer);
    let fits = dim == cache.head_dim() && heads.is_multiple_of(kv_heads.max(1));
    if !fits || pages.len() < visible || q.len() != heads * len * dim {
        return Err(Error::Session(format!(
            "attention of layer {layer}: the cache does not hold the {len} new positions"
        )));
    }
    // Per key/value head, its slice of every visible page.
    let unexpected = || Error::Unsupported("a cache page in another precision".into());
    let per_head: Vec<Vec<(&[E], &[E])>> = (0..kv_heads)
        .map(|g| {
            pages[..visible]
                .iter()
                .map(|page| {
                    let keys = E::rows(&page.keys).ok_or_else(unexpected)?;
                    let values = E::rows(&page.values).ok_or_else(unexpected)?;
                    let span = g * PAGE * dim..(g + 1) * PAGE * dim;
                    Ok((&keys[span.clone()], &values[span]))
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;

    let blocks = len.div_ceil(POSITION_BLOCK);
    let results: Vec<(usize, usize, Vec<f32>)> = (0..kv_heads * blocks)
        .into_par_iter()
        .map(|task| {
            let (g, b) = (task / blocks, task % blocks);
            let i0 = b * POSITION_BLOCK;
            let i1 = (i0 + POSITION_BLOCK).min(len);
            (g, i0, attend_block(&shape, q, g, i0..i1, &per_head[g]))
        })
        .collect();

    // Scatter each block's rows (position-major, then query head) to `(len, heads, dim)`.
    let mut out = vec![0f32; len * heads * dim];
    for (g, i0, block) in results {
        for (r, row) in block.chunks_exact(dim).enumerate() {
            let (i, h) = (i0 + r / shape.rep, g * shape.rep + r % shape.rep);
            out[(i * heads + h) * dim..][..dim].copy_from_slice(row);
        }
    }
    Ok(out)
}

/// One key/value head `g` and new positions `positions`: rows `(position, query head)`,
/// each attending to the cached keys up to and including its own position. `pages` are
/// the head's keys and values, `PAGE` positions each.
fn attend_block<E: Element>(
    s: &Shape,
    q_all: &[f32],
    g: usize,
    positions: std::ops::Range<usize>,
    pages: &[(&[E], &[E])],
) -> Vec<f32> {
    let (dim, rep) = (s.dim, s.rep);
    let rows = positions.len() * rep;
    let first = positions.start;
    let query = |r: usize| -> &[f32] {
        let (i, h) = (first + r / rep, g * rep + r % rep);
        &q_all[(i * s.heads + h) * dim..][..dim]
    };
    let limit = |r: usize| s.offset + first + r / rep + 1;
    let width = s.offset + positions.end;
    // The pages holding keys `0..seen`, with the first key's position and their count.
    let spans = |seen: usize| {
        pages
            .iter()
            .enumerate()
            .map(|(p, &(k, v))| (p * PAGE, k, v))
            .take_while(move |&(base, _, _)| base < seen)
            .map(move |(base, k, v)| (base, (seen - base).min(PAGE), k, v))
    };

    // 1. Scores of every row against the keys the last row may see (the others' extra
    //    keys are dropped below), one group of 64 keys at a time on the weight kernels.
    let mut queries: Vec<E> = Vec::with_capacity(rows * dim);
    for r in 0..rows {
        queries.extend(query(r).iter().map(|&v| E::narrow(v)));
    }
    let mut scores = vec![0f32; rows * width];
    for (base, count, keys, _) in spans(limit(rows - 1)) {
        for first in (0..count).step_by(KEY_GROUP) {
            let group = &keys[first * dim..][..KEY_GROUP * dim];
            let n = (count - first).min(KEY_GROUP);
            E::scores(&queries, dim, group, n, &mut scores[base + first..], width);
        }
    }

    // 2. Softmax numerators per row; keys past a row's own position weigh 0.
    let normalizers: Vec<f32> = scores
        .chunks_exact_mut(width)
        .enumerate()
        .map(|(r, row)| {
            let (seen, future) = row.split_at_mut(limit(r));
            future.fill(0.0);
            exp_normalizer(seen, s.scale)
        })
        .collect();

    // 3. Weighted sums of the values, 4 rows at a time, page by page, then normalised.
    let mut out = vec![0f32; rows * dim];
    for r0 in (0..rows).step_by(4) {
        let rr = (rows - r0).min(4);
        for (base, count, _, values) in spans(limit(r0 + rr - 1)) {
            let p: [&[f32]; 4] =
                std::array::from_fn(|i| &scores[(r0 + i.min(rr - 1)) * width + base..][..count]);
            weighted_sum(
                p,
                rr,
                &values[..count * dim],
                &mut out[r0 * dim..(r0 + rr) * dim],
            );
        }
    }
    for (row, inv) in out.chunks_exact_mut(dim).zip(normalizers) {
        row.iter_mut().for_each(|v| *v *= inv);
    }
    out
}

/// `out[i] += sum_j p[i][j] * values[j]` for the first `live` rows of `p` (`out` holds
/// `live` rows of the values' width; `p` rows all have one length, the values' count).
fn weighted_sum<E: Element>(p: [&[f32]; 4], live: usize, values: &[E], out: &mut [f32]) {
    let dim = out.len() / live;
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && dim.is_multiple_of(16) {
            // SAFETY: feature detected at run time; lengths are checked inside.
            unsafe {
                match live {
                    1 => avx512::weighted_sum::<E, 1>(p, values, out, dim),
                    2 => avx512::weighted_sum::<E, 2>(p, values, out, dim),
                    3 => avx512::weighted_sum::<E, 3>(p, values, out, dim),
                    _ => avx512::weighted_sum::<E, 4>(p, values, out, dim),
                }
            }
            return;
        }
    }
    for (i, o) in out.chunks_exact_mut(dim).enumerate() {
        for (&w, v) in p[i].iter().zip(values.chunks_exact(dim)) {
            for (a, &b) in o.iter_mut().zip(v) {
                *a += w * b.widen();
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Element;

    /// 16 cached values from `p`, widened to f32.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load<E: Element>(p: *const E) -> __m512 {
        if E::BF16 {
            let bits = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(bits))
        } else {
            _mm512_loadu_ps(p as *const f32)
        }
    }

    /// `R` rows of weights against the value rows, 64 (then 16) columns at a time: the
    /// accumulators stay in registers for the whole pass over the values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weighted_sum<E: Element, const R: usize>(
        p: [&[f32]; 4],
        values: &[E],
        out: &mut [f32],
        dim: usize,
    ) {
        let count = p[0].len();
        assert!(values.len() >= count * dim && out.len() >= R * dim && dim.is_multiple_of(16));
        assert!(p.iter().all(|row| row.len() == count));
        let mut c0 = 0;
        if R <= 2 {
            // Few rows (decoding): the whole width fits in registers, so each value row
            // is read once, in order, instead of once per 64 columns.
            while c0 + 128 <= dim {
                columns::<E, R, 8>(p, count, values, out, dim, c0);
                c0 += 128;
            }
        }
        while c0 + 64 <= dim {
            columns::<E, R, 4>(p, count, values, out, dim, c0);
            c0 += 64;
        }
        while c0 < dim {
            columns::<E, R, 1>(p, count, values, out, dim, c0);
            c0 += 16;
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn columns<E: Element, const R: usize, const Z: usize>(
        p: [&[f32]; 4],
        count: usize,
        values: &[E],
        out: &mut [f32],
        dim: usize,
        c0: usize,
    ) {
        let op = out.as_mut_ptr().add(c0);
        let mut acc: [[__m512; Z]; R] = std::array::from_fn(|i| {
            std::array::from_fn(|z| _mm512_loadu_ps(op.add(i * dim + 16 * z)))
        });
        let vp = values.as_ptr().add(c0);
        for j in 0..count {
            let v: [__m512; Z] = std::array::from_fn(|z| load(vp.add(j * dim + 16 * z)));
            for (i, row) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*p[i].get_unchecked(j));
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    /// Deterministic values in [-1, 1).
    fn values(seed: usize, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 2_654_435_761 % 1_000_003) as f32 / 500_001.5) - 1.0)
            .collect()
    }

    /// Softmax attention of every new row in f64, from the rows as the cache stores them.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        q: &[f32],
        keys: &[f32],
        vals: &[f32],
        (heads, kv_heads, dim): (usize, usize, usize),
        offset: usize,
        len: usize,
        scale: f32,
        round: impl Fn(f32) -> f32,
    ) -> Vec<f32> {
        let rep = heads / kv_heads;
        let mut out = vec![0f32; len * heads * dim];
        for i in 0..len {
            for h in 0..heads {
                let g = h / rep;
                let qr = &q[(i * heads + h) * dim..][..dim];
                let seen = offset + i + 1;
                let scores: Vec<f64> = (0..seen)
                    .map(|j| {
                        let k = &keys[(j * kv_heads + g) * dim..][..dim];
                        let dot: f64 = qr
                            .iter()
                            .zip(k)
                            .map(|(&a, &b)| round(a) as f64 * round(b) as f64)
                            .sum();
                        dot * scale as f64
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for d in 0..dim {
                    let sum: f64 = (0..seen)
                        .map(|j| weights[j] * round(vals[(j * kv_heads + g) * dim + d]) as f64)
                        .sum();
                    out[(i * heads + h) * dim + d] = (sum / total) as f32;
                }
            }
        }
        out
    }

    #[test]
    fn chunked_appends_over_pages_match_a_wide_reference() {
        let dim = 128;
        let round_bf16 = |v: f32| bf16::from_f32(v).to_f32();
        for (precision, round) in [
            (KvPrecision::F32, (|v| v) as fn(f32) -> f32),
            (KvPrecision::Bf16, round_bf16 as fn(f32) -> f32),
        ] {
            for (heads, kv_heads) in [(4, 2), (8, 2)] {
                let mut cache = KvCache::new(1, kv_heads, dim, precision);
                let (mut all_keys, mut all_values) = (Vec::new(), Vec::new());
                // Chunks that cross page edges, then single tokens (the decoding path).
                for (step, len) in [150, 1, 17, 100, 1].into_iter().enumerate() {
                    let offset = cache.len();
                    let q = values(step * 7 + 1, len * heads * dim);
                    let k = values(step * 7 + 2, len * kv_heads * dim);
                    let v = values(step * 7 + 3, len * kv_heads * dim);
                    all_keys.extend_from_slice(&k);
                    all_values.extend_from_slice(&v);
                    cache.write(0, &k, &v, len);
                    let scale = 1.0 / (dim as f32).sqrt();
                    let ours = attend_cached(&q, &cache, 0, (heads, offset, len), scale).unwrap();
                    cache.advance(len);
                    let expected = reference(
                        &q,
                        &all_keys,
                        &all_values,
                        (heads, kv_heads, dim),
                        offset,
                        len,
                        scale,
                        round,
                    );
                    for (a, b) in ours.iter().zip(&expected) {
                        assert!(
                            (a - b).abs() <= 2e-5,
                            "{precision:?} {heads}/{kv_heads} heads, step {step}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}
