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
//! keys in bf16, as in a bf16 reference; 8-bit queries, quantized like activations, with
//! 8-bit keys); scores, weights and sums are f32.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::cache::{KvCache, KvPrecision, Rows, KEY_GROUP, PAGE};
use crate::model::math::exp_normalizer;
use crate::model::q8::{key_scores, QuantizedQueries};

/// New positions per task: small enough that a short chunk still spreads over the cores
/// (tasks = key/value heads x blocks), large enough that the cached keys of one head are
/// read once for many query rows.
const POSITION_BLOCK: usize = 16;

/// The sizes every task shares.
struct Shape {
    heads: usize,
    dim: usize,
    /// Stored length of a key vector.
    key_depth: usize,
    /// Query heads per key/value head.
    rep: usize,
    /// Positions cached before the new ones.
    offset: usize,
    scale: f32,
}

/// How a cached value is stored: f32, bf16 bits, or an 8-bit `q + 128` byte (whose
/// vector's scale and offset the caller accounts for).
trait Element: Copy + Send + Sync + 'static {
    const KIND: Kind;
    fn widen(self) -> f32;
}

#[derive(PartialEq, Eq)]
enum Kind {
    F32,
    Bf16,
    Q8,
}

impl Element for f32 {
    const KIND: Kind = Kind::F32;
    fn widen(self) -> f32 {
        self
    }
}

impl Element for u16 {
    const KIND: Kind = Kind::Bf16;
    fn widen(self) -> f32 {
        half::bf16::from_bits(self).to_f32()
    }
}

/// An 8-bit entry's stored byte, `q + 128`: the weighted sum removes the offset.
impl Element for u8 {
    const KIND: Kind = Kind::Q8;
    fn widen(self) -> f32 {
        self as f32
    }
}

/// One key/value head's part of a page: the page's keys and values, of which this head
/// owns `PAGE` vectors each.
struct HeadPage<'a> {
    keys: &'a Rows,
    values: &'a Rows,
    head: usize,
}

/// A task's query rows in the form the cache's key kernel takes.
enum Queries {
    F32(Vec<f32>),
    Bf16(Vec<u16>),
    Q8(QuantizedQueries),
}

impl Queries {
    fn new<'a>(
        precision: KvPrecision,
        rows: impl Iterator<Item = &'a [f32]>,
        depth: usize,
    ) -> Self {
        match precision {
            KvPrecision::F32 => Queries::F32(rows.flatten().copied().collect()),
            KvPrecision::Bf16 => Queries::Bf16(
                rows.flatten()
                    .map(|&v| half::bf16::from_f32(v).to_bits())
                    .collect(),
            ),
            KvPrecision::Q8 => Queries::Q8(QuantizedQueries::new(rows, depth)),
        }
    }
}

impl HeadPage<'_> {
    /// Scores of the queries against the `n` keys of this page from slot `first` (a
    /// multiple of 64): `out[r * ld + c]`.
    fn scores(
        &self,
        queries: &Queries,
        depth: usize,
        first: usize,
        n: usize,
        out: &mut [f32],
        ld: usize,
    ) {
        let span =
            (self.head * PAGE + first) * depth..(self.head * PAGE + first + KEY_GROUP) * depth;
        match (queries, self.keys) {
            (Queries::F32(q), Rows::F32(k)) => {
                crate::model::f32::block(q, depth, &k[span], n, out, ld)
            }
            (Queries::Bf16(q), Rows::Bf16(k)) => {
                crate::model::bf16::block(q, depth, &k[span], n, out, ld)
            }
            (Queries::Q8(q), Rows::Q8 { data, scales }) => {
                let vectors = self.head * PAGE + first;
                key_scores(
                    q,
                    &data[span],
                    &scales[vectors..vectors + KEY_GROUP],
                    n,
                    out,
                    ld,
                )
            }
            // `attend` checked that every page is in the cache's precision.
            _ => unreachable!("a page in another precision than the cache"),
        }
    }

    /// `out[i] += sum_j p[i][j] * value[j]` over this page's first `count` values.
    fn weighted_sum(&self, p: [&[f32]; 4], live: usize, count: usize, dim: usize, out: &mut [f32]) {
        let span = self.head * PAGE * dim..(self.head * PAGE + count) * dim;
        match self.values {
            Rows::F32(v) => weighted_sum(p, live, &v[span], out),
            Rows::Bf16(v) => weighted_sum(p, live, &v[span], out),
            Rows::Q8 { data, scales } => {
                // Each weight times its value vector's scale, then the bytes as they are
                // stored: `sum w (b - 128) = sum w b - 128 sum w`, so the offset costs one
                // subtraction per output rather than one per byte.
                let vectors = &scales[self.head * PAGE..][..count];
                let scaled: Vec<Vec<f32>> = p[..live]
                    .iter()
                    .map(|row| row.iter().zip(vectors).map(|(w, s)| w * s).collect())
                    .collect();
                let p: [&[f32]; 4] = std::array::from_fn(|i| scaled[i.min(live - 1)].as_slice());
                weighted_sum(p, live, &data[span], out);
                for (row, weights) in out.chunks_exact_mut(dim).zip(&scaled) {
                    let offset = 128.0 * weights.iter().sum::<f32>();
                    row.iter_mut().for_each(|v| *v -= offset);
                }
            }
        }
    }
}

fn precision_of(rows: &Rows) -> KvPrecision {
    match rows {
        Rows::F32(_) => KvPrecision::F32,
        Rows::Bf16(_) => KvPrecision::Bf16,
        Rows::Q8 { .. } => KvPrecision::Q8,
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
    let dim = q.len() / (heads * len).max(1);
    let kv_heads = cache.kv_heads();
    let precision = cache.precision();
    let shape = Shape {
        heads,
        dim,
        key_depth: precision.key_depth(dim),
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
    let pages = &pages[..visible];
    if pages
        .iter()
        .any(|p| precision_of(&p.keys) != precision || precision_of(&p.values) != precision)
    {
        return Err(Error::Unsupported(
            "a cache page in another precision".into(),
        ));
    }
    // Per key/value head, its part of every visible page.
    let per_head: Vec<Vec<HeadPage>> = (0..kv_heads)
        .map(|head| {
            pages
                .iter()
                .map(|page| HeadPage {
                    keys: &page.keys,
                    values: &page.values,
                    head,
                })
                .collect()
        })
        .collect();

    let blocks = len.div_ceil(POSITION_BLOCK);
    let results: Vec<(usize, usize, Vec<f32>)> = (0..kv_heads * blocks)
        .into_par_iter()
        .map(|task| {
            let (g, b) = (task / blocks, task % blocks);
            let i0 = b * POSITION_BLOCK;
            let i1 = (i0 + POSITION_BLOCK).min(len);
            let block = attend_block(&shape, precision, q, g, i0..i1, &per_head[g]);
            (g, i0, block)
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
/// the head's parts of the pages, `PAGE` positions each.
fn attend_block(
    s: &Shape,
    precision: KvPrecision,
    q_all: &[f32],
    g: usize,
    positions: std::ops::Range<usize>,
    pages: &[HeadPage],
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
            .map(|(p, page)| (p * PAGE, page))
            .take_while(move |&(base, _)| base < seen)
            .map(move |(base, page)| (base, (seen - base).min(PAGE), page))
    };

    // 1. Scores of every row against the keys the last row may see (the others' extra
    //    keys are dropped below), one group of 64 keys at a time on the weight kernels.
    let queries = Queries::new(precision, (0..rows).map(query), s.key_depth);
    let mut scores = vec![0f32; rows * width];
    for (base, count, page) in spans(limit(rows - 1)) {
        for first in (0..count).step_by(KEY_GROUP) {
            let n = (count - first).min(KEY_GROUP);
            page.scores(
                &queries,
                s.key_depth,
                first,
                n,
                &mut scores[base + first..],
                width,
            );
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
        for (base, count, page) in spans(limit(r0 + rr - 1)) {
            let p: [&[f32]; 4] =
                std::array::from_fn(|i| &scores[(r0 + i.min(rr - 1)) * width + base..][..count]);
            page.weighted_sum(p, rr, count, dim, &mut out[r0 * dim..(r0 + rr) * dim]);
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

    use super::{Element, Kind};

    /// 16 cached values from `p`, widened to f32.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load<E: Element>(p: *const E) -> __m512 {
        match E::KIND {
            Kind::F32 => _mm512_loadu_ps(p as *const f32),
            Kind::Bf16 => {
                let bits = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(bits))
            }
            Kind::Q8 => {
                _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i)))
            }
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

    /// Softmax attention of every new row in f64, from the rows as the cache stores them
    /// (and the queries as they meet the keys).
    fn reference(
        q: &[f32],
        keys: &[f32],
        vals: &[f32],
        (heads, kv_heads, dim): (usize, usize, usize),
        offset: usize,
        len: usize,
        scale: f32,
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
                        let dot: f64 = qr.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum();
                        dot * scale as f64
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for d in 0..dim {
                    let sum: f64 = (0..seen)
                        .map(|j| weights[j] * vals[(j * kv_heads + g) * dim + d] as f64)
                        .sum();
                    out[(i * heads + h) * dim + d] = (sum / total) as f32;
                }
            }
        }
        out
    }

    /// `values` as `precision` stores them: each run of `block` values (one vector, or one
    /// block of an 8-bit query) rounded on its own.
    fn stored(precision: KvPrecision, values: &[f32], block: usize) -> Vec<f32> {
        match precision {
            KvPrecision::F32 => values.to_vec(),
            KvPrecision::Bf16 => values.iter().map(|&v| bf16::from_f32(v).to_f32()).collect(),
            KvPrecision::Q8 => values
                .chunks(block)
                .flat_map(|run| {
                    let max = run.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let step = if max > 0.0 { max / 127.0 } else { 1.0 };
                    run.iter().map(move |v| (v / step).round() * step)
                })
                .collect(),
        }
    }

    #[test]
    fn chunked_appends_over_pages_match_a_wide_reference() {
        let dim = 128;
        for precision in [KvPrecision::F32, KvPrecision::Bf16, KvPrecision::Q8] {
            for (heads, kv_heads) in [(4, 2), (8, 2)] {
                let mut cache = KvCache::new(1, kv_heads, dim, precision);
                let (mut all_keys, mut all_values) = (Vec::new(), Vec::new());
                // Chunks that cross page edges, then single tokens (the decoding path).
                for (step, len) in [150, 1, 17, 100, 1].into_iter().enumerate() {
                    let offset = cache.len();
                    let q = values(step * 7 + 1, len * heads * dim);
                    let k = values(step * 7 + 2, len * kv_heads * dim);
                    let v = values(step * 7 + 3, len * kv_heads * dim);
                    all_keys.extend(stored(precision, &k, dim));
                    all_values.extend(stored(precision, &v, dim));
                    cache.write(0, &k, &v, len);
                    let scale = 1.0 / (dim as f32).sqrt();
                    let ours = attend_cached(&q, &cache, 0, (heads, offset, len), scale).unwrap();
                    cache.advance(len);
                    let expected = reference(
                        &stored(precision, &q, 64),
                        &all_keys,
                        &all_values,
                        (heads, kv_heads, dim),
                        offset,
                        len,
                        scale,
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

    /// Key vectors shorter than the 8-bit kernel's block of 64 are padded in the page and
    /// still meet their queries exactly as stored.
    #[test]
    fn short_eight_bit_keys_are_padded() {
        let (dim, heads, kv_heads, len) = (16, 4, 2, 70);
        let mut cache = KvCache::new(1, kv_heads, dim, KvPrecision::Q8);
        let q = values(1, len * heads * dim);
        let k = values(2, len * kv_heads * dim);
        let v = values(3, len * kv_heads * dim);
        cache.write(0, &k, &v, len);
        let scale = 0.25;
        let ours = attend_cached(&q, &cache, 0, (heads, 0, len), scale).unwrap();
        let expected = reference(
            &stored(KvPrecision::Q8, &q, dim),
            &stored(KvPrecision::Q8, &k, dim),
            &stored(KvPrecision::Q8, &v, dim),
            (heads, kv_heads, dim),
            0,
            len,
            scale,
        );
        for (a, b) in ours.iter().zip(&expected) {
            assert!((a - b).abs() <= 2e-5, "{a} vs {b}");
        }
    }
}
