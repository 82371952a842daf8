//! Causal attention of new positions over a sequence's key/value cache, read in place.
//!
//! The general tensor path materialises the whole `(heads, new, cached)` score matrix, a
//! mask of the same size and an f32 copy for the softmax, and its matrix product packs the
//! cached keys again on every call, so that one appended token costs two reads of the
//! cache and a 2,048-token prompt holds gigabytes of scores. Here each task takes one
//! key/value head and a block of up to 16 new positions (with the query heads that share
//! that key/value head), and runs its products page by page on the weight products' own
//! kernels, since pages hold keys (and f32 or bf16 values) as weight panels: the scores of
//! the keys those positions may see, then the sums of the values weighted by the softmax
//! numerators. Memory stays proportional to the block, and the work to the causal
//! triangle. The products take their left operand in the cache's precision, as a
//! reference in that precision does: f32, or bf16 (queries and attention weights rounded,
//! as a bf16 reference's products take them). 8-bit caches score keys against queries
//! quantized per block of 64 like activations, and sum their byte values with f32 weights,
//! each multiplied by its value vector's scale. Scores, the softmax and the sums are f32.

use std::ops::Range;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::math::exp_normalizer;
use crate::kernels::panels::GROUP;
use crate::kernels::q8::{group_product, weighted_bytes, QuantizedQueries};
use crate::model::{KvCache, KvPrecision, Rows, KEY_GROUP, PAGE};

/// New positions per task: small enough that a short chunk still spreads over the cores
/// (tasks = key/value heads x blocks), large enough that the cached keys of one head are
/// read once for many query rows.
const POSITION_BLOCK: usize = 16;

/// The sizes every task shares.
struct Shape {
    heads: usize,
    dim: usize,
    /// Stored lengths of a key and a value vector.
    key_depth: usize,
    value_depth: usize,
    /// Query heads per key/value head.
    rep: usize,
    /// Positions cached before the new ones.
    offset: usize,
    scale: f32,
}

/// One key/value head's part of a page: the page's keys and values, of which this head
/// owns `PAGE` vectors each.
struct HeadPage<'a> {
    keys: &'a Rows,
    values: &'a Rows,
    head: usize,
}

/// Left operand rows of a product in the form the cache precision's kernel takes, each
/// padded with zeros to the product's depth.
enum Operand {
    F32(Vec<f32>),
    Bf16(Vec<u16>),
    Q8(QuantizedQueries),
}

impl Operand {
    fn new<'a>(
        precision: KvPrecision,
        rows: impl Iterator<Item = &'a [f32]>,
        depth: usize,
    ) -> Self {
        let padded = |rows: &mut dyn Iterator<Item = &'a [f32]>| {
            let mut out = Vec::new();
            for row in rows {
                out.extend_from_slice(row);
                out.resize(out.len() + depth - row.len(), 0.0);
            }
            out
        };
        match precision {
            KvPrecision::F32 => Operand::F32(padded(&mut { rows })),
            KvPrecision::Bf16 => Operand::Bf16(
                padded(&mut { rows })
                    .into_iter()
                    .map(|v| half::bf16::from_f32(v).to_bits())
                    .collect(),
            ),
            KvPrecision::Q8 => Operand::Q8(QuantizedQueries::new(rows, depth)),
        }
    }

    /// `out[r * ld + c]` for every row of `self` against the first `n` rows of the panel
    /// group `span` of `rows` (rows `depth` long; 8-bit rows scaled by `scales`).
    #[allow(clippy::too_many_arguments)]
    fn product(
        &self,
        rows: &Rows,
        span: Range<usize>,
        depth: usize,
        scales: &[f32],
        n: usize,
        out: &mut [f32],
        ld: usize,
    ) {
        match (self, rows) {
            (Operand::F32(x), Rows::F32(w)) => {
                crate::kernels::f32::block(x, depth, &w[span], n, out, ld)
            }
            (Operand::Bf16(x), Rows::Bf16(w)) => {
                crate::kernels::bf16::block(x, depth, &w[span], n, out, ld)
            }
            (Operand::Q8(x), Rows::Q8 { data, .. }) => {
                group_product(x, &data[span], scales, n, out, ld)
            }
            // `attend_cached` checked that every page is in the cache's precision.
            _ => unreachable!("a page in another precision than the cache"),
        }
    }
}

impl HeadPage<'_> {
    /// Scores of the queries against the `n` keys of this page from slot `first` (a
    /// multiple of 64), keys `depth` long: `out[r * ld + c]`.
    fn scores(
        &self,
        queries: &Operand,
        depth: usize,
        first: usize,
        n: usize,
        out: &mut [f32],
        ld: usize,
    ) {
        let vector = self.head * PAGE + first;
        let span = vector * depth..(vector + KEY_GROUP) * depth;
        let scales = match self.keys {
            Rows::Q8 { scales, .. } => &scales[vector..vector + KEY_GROUP],
            _ => &[],
        };
        queries.product(self.keys, span, depth, scales, n, out, ld);
    }

    /// Adds to `out` (rows `dim` wide) this page's values weighted by `p` (rows of
    /// weights for its first `count` positions); `part` is scratch space.
    fn add_values(&self, s: &Shape, p: &[&[f32]], count: usize, part: &mut [f32], out: &mut [f32]) {
        let (dim, value_depth) = (s.dim, s.value_depth);
        if let Rows::Q8 { data, scales } = self.values {
            // Each weight times its value vector's scale, over the signed bytes. The
            // weights stay f32: quantized to 8 bits as well (so that this sum could run on
            // the byte kernel), they doubled the 8-bit drift on the test fixtures, and
            // verdicts were no faster within the machine's noise.
            let vectors = &scales[self.head * PAGE..][..count];
            let weights: Vec<f32> = p
                .iter()
                .flat_map(|row| row.iter().zip(vectors).map(|(w, s)| w * s))
                .collect();
            let bytes = &data[self.head * PAGE * value_depth..][..count * value_depth];
            weighted_bytes(&weights, count, bytes, dim, out);
            return;
        }
        // bf16 products take features in pairs.
        let precision = precision_of(self.values);
        let depth = match precision {
            KvPrecision::F32 => count,
            _ => count.div_ceil(2) * 2,
        };
        let weights = Operand::new(precision, p.iter().copied(), depth);
        for first in (0..dim).step_by(GROUP) {
            let n = (dim - first).min(GROUP);
            let start = self.head * PAGE * value_depth + first * PAGE;
            let span = start..start + GROUP * depth;
            weights.product(self.values, span, depth, &[], n, part, GROUP);
            for (o, sum) in out.chunks_exact_mut(dim).zip(part.chunks_exact(GROUP)) {
                for (a, b) in o[first..first + n].iter_mut().zip(sum) {
                    *a += b;
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
/// `(len, heads * head_dim)`, ready for the output projection. The model calls the batched
/// form; this one sequence's form is what the tests check against the reference.
#[cfg(test)]
fn attend_cached(
    q: &[f32],
    cache: &KvCache,
    layer: usize,
    (heads, first, len): (usize, usize, usize),
    scale: f32,
) -> Result<Vec<f32>> {
    let sequence = Sequence {
        q,
        cache,
        first,
        len,
    };
    Ok(attend_cached_batch(&[sequence], layer, heads, scale)?.remove(0))
}

/// One sequence's new positions in [`attend_cached_batch`]: queries `q` `(len, heads *
/// head_dim)` for positions `first..first + len` of `cache`.
pub struct Sequence<'a> {
    /// The rotated queries.
    pub q: &'a [f32],
    /// The sequence's cache, already holding the new keys and values.
    pub cache: &'a KvCache,
    /// Position of the first new row.
    pub first: usize,
    /// New rows.
    pub len: usize,
}

/// [`attend_cached`] for several sequences in one parallel pass: each result equals that
/// sequence's own call, but the tasks of all of them (key/value head x block of
/// positions) share the thread pool at once. A step of many sessions with one new token
/// each is many tiny attentions; run one after another, each waited for its few tasks
/// and the cores idled between them.
pub fn attend_cached_batch(
    sequences: &[Sequence<'_>],
    layer: usize,
    heads: usize,
    scale: f32,
) -> Result<Vec<Vec<f32>>> {
    let prepared: Vec<Prepared<'_>> = sequences
        .iter()
        .map(|s| Prepared::new(s, layer, heads, scale))
        .collect::<Result<_>>()?;
    let tasks: Vec<(usize, usize, usize)> = prepared
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            let blocks = p.len.div_ceil(POSITION_BLOCK);
            (0..p.per_head.len() * blocks).map(move |t| (i, t / blocks, t % blocks))
        })
        .collect();
    let results: Vec<(usize, usize, usize, Vec<f32>)> = tasks
        .into_par_iter()
        .map(|(i, g, b)| {
            let (p, q) = (&prepared[i], sequences[i].q);
            let i0 = b * POSITION_BLOCK;
            let i1 = (i0 + POSITION_BLOCK).min(p.len);
            let block = attend_block(&p.shape, p.precision, q, g, i0..i1, &p.per_head[g]);
            (i, g, i0, block)
        })
        .collect();

    // Scatter each block's rows (position-major, then query head) to `(len, heads, dim)`.
    let mut outs: Vec<Vec<f32>> = prepared
        .iter()
        .map(|p| vec![0f32; p.len * heads * p.shape.dim])
        .collect();
    for (i, g, i0, block) in results {
        let (shape, out) = (&prepared[i].shape, &mut outs[i]);
        let dim = shape.dim;
        for (r, row) in block.chunks_exact(dim).enumerate() {
            let (pos, h) = (i0 + r / shape.rep, g * shape.rep + r % shape.rep);
            out[(pos * heads + h) * dim..][..dim].copy_from_slice(row);
        }
    }
    Ok(outs)
}

/// A sequence checked against its cache, with what its tasks share.
struct Prepared<'a> {
    shape: Shape,
    precision: KvPrecision,
    len: usize,
    /// Per key/value head, its part of every visible page.
    per_head: Vec<Vec<HeadPage<'a>>>,
}

impl<'a> Prepared<'a> {
    fn new(sequence: &Sequence<'a>, layer: usize, heads: usize, scale: f32) -> Result<Self> {
        let Sequence {
            q,
            cache,
            first,
            len,
        } = *sequence;
        let dim = q.len() / (heads * len).max(1);
        let kv_heads = cache.kv_heads();
        let precision = cache.precision();
        let shape = Shape {
            heads,
            dim,
            key_depth: precision.key_depth(dim),
            value_depth: precision.value_depth(dim),
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
        let per_head = (0..kv_heads)
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
        Ok(Prepared {
            shape,
            precision,
            len,
            per_head,
        })
    }
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
    let queries = Operand::new(precision, (0..rows).map(query), s.key_depth);
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

    // 3. Sums of the values weighted by the numerators, page by page, then normalised.
    let mut out = vec![0f32; rows * dim];
    let mut part = vec![0f32; rows * GROUP];
    for (base, count, page) in spans(limit(rows - 1)) {
        let p: Vec<&[f32]> = (0..rows)
            .map(|r| &scores[r * width + base..][..count])
            .collect();
        page.add_values(s, &p, count, &mut part, &mut out);
    }
    for (row, inv) in out.chunks_exact_mut(dim).zip(normalizers) {
        row.iter_mut().for_each(|v| *v *= inv);
    }
    out
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
    /// (and the queries as they meet the keys); `weighted(weights, g)` gives the weights
    /// of key/value head `g`'s values as the value product takes them.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        q: &[f32],
        keys: &[f32],
        vals: &[f32],
        (heads, kv_heads, dim): (usize, usize, usize),
        offset: usize,
        len: usize,
        scale: f32,
        weighted: impl Fn(&[f64], usize) -> Vec<f64>,
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
                let weights = weighted(&weights, g);
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
                    run.iter().map(move |v| (v / step).round_ties_even() * step)
                })
                .collect(),
        }
    }

    /// The attention weights as `precision`'s value product takes them: each rounded to
    /// bf16 in bf16; as they are in f32 and 8 bits.
    fn weighted(precision: KvPrecision, weights: &[f64]) -> Vec<f64> {
        match precision {
            KvPrecision::F32 => weights.to_vec(),
            KvPrecision::Bf16 => weights
                .iter()
                .map(|&w| bf16::from_f32(w as f32).to_f32() as f64)
                .collect(),
            KvPrecision::Q8 => weights.to_vec(),
        }
    }

    /// Checks `ours` against the reference. f32 mirrors it up to the order of sums. With
    /// rounded or quantized weights, a weight whose exact value sits on a rounding edge can
    /// round the other way in ours (its f32 exponential) than in the reference (f64): that
    /// moves one row's outputs by at most one step of one weight, and happens rarely (for
    /// well under 1 % of the outputs here); a wrong layout or scale moves nearly every one.
    fn assert_close(precision: KvPrecision, ours: &[f32], expected: &[f32], context: &str) {
        let (close, step) = match precision {
            KvPrecision::F32 => (2e-5, 2e-5),
            KvPrecision::Bf16 => (3e-5, 4e-3),
            KvPrecision::Q8 => (1e-4, 1e-2),
        };
        assert_eq!(ours.len(), expected.len());
        let mut far = 0;
        for (a, b) in ours.iter().zip(expected) {
            assert!((a - b).abs() <= step, "{precision:?} {context}: {a} vs {b}");
            far += usize::from((a - b).abs() > close);
        }
        assert!(
            far * 100 <= ours.len(),
            "{precision:?} {context}: {far} of {} outputs off by more than {close}",
            ours.len()
        );
    }

    #[test]
    // Safe code only (the attention over the cache has no unsafe block), over thousands
    // of 128-wide vectors: hours under Miri, which interprets every operation. The page
    // edges it crosses are Miri-checked in `model::cache`.
    #[cfg_attr(miri, ignore = "hours under Miri; safe code")]
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
                        |w, _| weighted(precision, w),
                    );
                    let context = format!("{heads}/{kv_heads} heads, step {step}");
                    assert_close(precision, &ours, &expected, &context);
                }
            }
        }
    }

    /// Key and value vectors shorter than a panel (64) are padded in the page and still
    /// meet their queries and weights exactly as stored, in every precision.
    #[test]
    #[cfg_attr(miri, ignore = "over a quarter of an hour under Miri; safe code")]
    fn short_vectors_are_padded() {
        let (dim, heads, kv_heads, len) = (16, 4, 2, 70);
        for precision in [KvPrecision::F32, KvPrecision::Bf16, KvPrecision::Q8] {
            let mut cache = KvCache::new(1, kv_heads, dim, precision);
            let q = values(1, len * heads * dim);
            let k = values(2, len * kv_heads * dim);
            let v = values(3, len * kv_heads * dim);
            cache.write(0, &k, &v, len);
            let scale = 0.25;
            let ours = attend_cached(&q, &cache, 0, (heads, 0, len), scale).unwrap();
            let expected = reference(
                &stored(precision, &q, dim),
                &stored(precision, &k, dim),
                &stored(precision, &v, dim),
                (heads, kv_heads, dim),
                0,
                len,
                scale,
                |w, _| weighted(precision, w),
            );
            assert_close(precision, &ours, &expected, "head_dim 16");
        }
    }

    /// Sequences of different lengths, offsets and cache precisions' shapes in one batch
    /// get exactly what each gets alone.
    #[test]
    #[cfg_attr(miri, ignore = "minutes under Miri; safe code")]
    fn a_batch_equals_each_sequence_alone() {
        let (dim, heads, kv_heads) = (64, 4, 2);
        for precision in [KvPrecision::F32, KvPrecision::Bf16, KvPrecision::Q8] {
            // (cached before, new rows): one token after many, a chunk, a fresh prompt.
            let plan = [(70, 1), (3, 20), (0, 5), (130, 1)];
            let mut caches = Vec::new();
            let mut queries = Vec::new();
            for (n, &(cached, len)) in plan.iter().enumerate() {
                let mut cache = KvCache::new(1, kv_heads, dim, precision);
                let total = cached + len;
                let k = values(n * 5 + 1, total * kv_heads * dim);
                let v = values(n * 5 + 2, total * kv_heads * dim);
                if cached > 0 {
                    cache.write(
                        0,
                        &k[..cached * kv_heads * dim],
                        &v[..cached * kv_heads * dim],
                        cached,
                    );
                    cache.advance(cached);
                }
                cache.write(
                    0,
                    &k[cached * kv_heads * dim..],
                    &v[cached * kv_heads * dim..],
                    len,
                );
                caches.push(cache);
                queries.push(values(n * 5 + 3, len * heads * dim));
            }
            let sequences: Vec<Sequence> = plan
                .iter()
                .zip(&caches)
                .zip(&queries)
                .map(|((&(cached, len), cache), q)| Sequence {
                    q,
                    cache,
                    first: cached,
                    len,
                })
                .collect();
            let together = attend_cached_batch(&sequences, 0, heads, 0.125).unwrap();
            for (s, batched) in sequences.iter().zip(&together) {
                let alone = attend_cached(s.q, s.cache, 0, (heads, s.first, s.len), 0.125).unwrap();
                assert_eq!(&alone, batched, "{precision:?} after {}", s.first);
            }
        }
    }
}
