//! The key/value cache of one sequence, in fixed-size pages.
//!
//! A cache belongs to one sequence (a Gen request or a Stream session), never to the model,
//! so that one loaded model serves any number of sequences without locks. Positions live in
//! pages of 128: appending writes only the new positions, a long session never copies what
//! it holds into a bigger buffer (nor needs the old and the new buffer at once), and a fork
//! shares every page with its parent until one of them writes to it, so that many requests
//! can start from one cached preamble without copying it.
//!
//! Keys and values are stored in f32 for f32 models (exact parity with the reference), in
//! bf16 for bf16 models, as a bf16 reference stores them (half the memory, and half the
//! bytes that attention reads for every new token), and in 8 bits for 8-bit models (a
//! quarter: with 8-bit weights a long session's cache is otherwise as large as the model
//! and as slow to read). 8-bit entries are quantized per vector (one head's key or value
//! at one position, symmetric, one f32 scale each); keys are stored as `q + 128`, like the
//! 8-bit weights (the unsigned operand of the byte product, against signed queries), and
//! values as signed bytes.
//!
//! Both halves are laid out as weight [`Panels`](crate::kernels::Panels) (runs of 1, 2 or 4
//! features of 64 rows side by side, as the precision's kernel reads them), so that both
//! products of attention run on the weight products' kernels: a head's keys are two
//! panels whose rows are the page's positions and whose features are the key's (query-key
//! scores), its values are panels whose rows are 64 of the value's features and whose
//! features are the page's positions (the weighted sum of values). 8-bit values are plain
//! rows instead: their weighted sum keeps the attention weights in f32.

use std::sync::Arc;

use half::bf16;

use crate::kernels::panels::GROUP;
use crate::kernels::q8::quantize_run;

/// Positions per page.
pub const PAGE: usize = 128;

/// How cached keys and values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvPrecision {
    /// As computed.
    F32,
    /// Rounded to bfloat16 (raw bits).
    Bf16,
    /// Quantized to 8 bits per vector.
    Q8,
}

impl KvPrecision {
    /// Features per run in the panels: what one step of the matching kernel reads.
    fn pack(self) -> usize {
        match self {
            KvPrecision::F32 => 1,
            KvPrecision::Bf16 => 2,
            KvPrecision::Q8 => 4,
        }
    }

    /// The stored length of a key vector of `dim` features: the 8-bit kernel sums blocks
    /// of 64 features, so 8-bit keys are padded (with zeros) to whole blocks.
    pub fn key_depth(self, dim: usize) -> usize {
        match self {
            KvPrecision::Q8 => dim.div_ceil(64) * 64,
            _ => dim,
        }
    }

    /// The stored length of a value vector of `dim` features: f32 and bf16 values are
    /// panels of 64 features, so they are padded to whole panels; 8-bit values are rows.
    pub fn value_depth(self, dim: usize) -> usize {
        match self {
            KvPrecision::Q8 => dim,
            _ => dim.div_ceil(GROUP) * GROUP,
        }
    }
}

/// The entries of one page, `kv_heads * PAGE` vectors, in the cache's precision.
#[derive(Debug, Clone)]
pub enum Rows {
    /// f32 values.
    F32(Vec<f32>),
    /// bf16 bits.
    Bf16(Vec<u16>),
    /// 8-bit values (keys as `q + 128`, values as signed bytes), and the scale of each
    /// vector (`head * PAGE + slot`): an entry is `q * scale`.
    Q8 {
        /// The bytes.
        data: Vec<u8>,
        /// One scale per vector.
        scales: Vec<f32>,
    },
}

impl Rows {
    /// `vectors` vectors of `width` stored entries each.
    fn zeros(precision: KvPrecision, vectors: usize, width: usize) -> Self {
        let len = vectors * width;
        match precision {
            KvPrecision::F32 => Rows::F32(vec![0.0; len]),
            KvPrecision::Bf16 => Rows::Bf16(vec![0; len]),
            KvPrecision::Q8 => Rows::Q8 {
                data: vec![0; len],
                scales: vec![0.0; vectors],
            },
        }
    }

    /// Writes vector `vector` (one head at one slot): element `d` of `values` goes to
    /// `index(d)`, rounded or quantized to the rows' precision (8-bit keys as `q + 128`).
    fn write(&mut self, vector: usize, values: &[f32], index: impl Fn(usize) -> usize, key: bool) {
        match self {
            Rows::F32(rows) => {
                for (d, &v) in values.iter().enumerate() {
                    rows[index(d)] = v;
                }
            }
            Rows::Bf16(rows) => {
                for (d, &v) in values.iter().enumerate() {
                    rows[index(d)] = bf16::from_f32(v).to_bits();
                }
            }
            Rows::Q8 { data, scales } => {
                let bias = if key { 128 } else { 0 };
                scales[vector] = quantize(values, |d, q| data[index(d)] = (q + bias) as u8);
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Rows::F32(rows) => rows.len() * 4,
            Rows::Bf16(rows) => rows.len() * 2,
            Rows::Q8 { data, scales } => data.len() + scales.len() * 4,
        }
    }
}

/// Quantizes one vector symmetrically to 8 bits, passing each `(index, q)` to `store`;
/// returns the scale.
fn quantize(values: &[f32], mut store: impl FnMut(usize, i32)) -> f32 {
    // A head's vector (128 values in Qwen3) fits the stack buffer.
    let mut stack = [0i8; 256];
    let mut heap = Vec::new();
    let buffer = if values.len() <= stack.len() {
        &mut stack[..values.len()]
    } else {
        heap.resize(values.len(), 0);
        &mut heap[..]
    };
    let (scale, _) = quantize_run(values, buffer);
    for (d, &q) in buffer.iter().enumerate() {
        store(d, q as i32);
    }
    scale
}

/// Positions per key group: the weights' panel group, one register tile of scores.
pub const KEY_GROUP: usize = GROUP;

/// Where feature `feature` of row `row` lives in panels of rows `depth` features long
/// (whole groups of 64 rows, then runs of `pack` features with the group's 64 rows side by
/// side), as [`Panels`](crate::kernels::Panels) stores weights.
fn panel_index(row: usize, feature: usize, depth: usize, pack: usize) -> usize {
    (row / GROUP) * GROUP * depth
        + (feature / pack) * pack * GROUP
        + (row % GROUP) * pack
        + feature % pack
}

/// Where feature `d` of the key of `head` at `slot` lives in a page of key vectors
/// `depth` long: the head's two panels, whose rows are the slots.
fn key_index(head: usize, slot: usize, d: usize, depth: usize, pack: usize) -> usize {
    head * PAGE * depth + panel_index(slot, d, depth, pack)
}

/// Where feature `d` of the value of `head` at `slot` lives in a page of value vectors
/// `depth` long: the head's panels, whose rows are the features and whose depth is the
/// page's slots; for 8 bits, rows `(PAGE, depth)` (their weighted sum takes f32 weights).
fn value_index(head: usize, slot: usize, d: usize, depth: usize, precision: KvPrecision) -> usize {
    match precision {
        KvPrecision::Q8 => (head * PAGE + slot) * depth + d,
        _ => head * PAGE * depth + panel_index(d, slot, PAGE, precision.pack()),
    }
}

/// One layer's keys and values for `PAGE` consecutive positions.
#[derive(Debug, Clone)]
pub struct Page {
    /// Keys: per head, panels of 64 positions by the key's features.
    pub keys: Rows,
    /// Values: per head, panels of 64 of the value's features by the page's positions.
    pub values: Rows,
}

/// The cache of every layer, plus how many positions it holds.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Per layer, the pages in position order.
    layers: Vec<Vec<Arc<Page>>>,
    len: usize,
    kv_heads: usize,
    head_dim: usize,
    precision: KvPrecision,
}

impl KvCache {
    /// An empty cache for `num_layers` layers of `kv_heads` heads of `head_dim` values.
    pub fn new(
        num_layers: usize,
        kv_heads: usize,
        head_dim: usize,
        precision: KvPrecision,
    ) -> Self {
        KvCache {
            layers: vec![Vec::new(); num_layers],
            len: 0,
            kv_heads,
            head_dim,
            precision,
        }
    }

    /// Positions cached so far; the next token's position.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Key/value heads per layer.
    pub fn kv_heads(&self) -> usize {
        self.kv_heads
    }

    /// Values per key or value vector.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// How keys and values are stored.
    pub fn precision(&self) -> KvPrecision {
        self.precision
    }

    /// Forgets every position from `len` on; pages left wholly unused are released.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        let pages = self.len.div_ceil(PAGE);
        for layer in &mut self.layers {
            layer.truncate(pages);
        }
    }

    /// An independent cache with the same positions. Pages are shared until either cache
    /// writes to one; only that page is then copied.
    pub fn fork(&self) -> Self {
        self.clone()
    }

    /// Bytes held by this cache's pages (shared pages counted in full).
    pub fn allocated_bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|p| p.keys.bytes() + p.values.bytes())
            .sum()
    }

    /// Layer `layer`'s pages, in position order (positions past [`Self::len`] plus the ones
    /// being appended are stale).
    pub(crate) fn pages(&self, layer: usize) -> &[Arc<Page>] {
        self.layers.get(layer).map_or(&[], Vec::as_slice)
    }

    /// Writes layer `layer`'s keys and values for `count` new positions after the cached
    /// ones; `keys` and `values` are rows `(count, kv_heads * head_dim)`.
    pub(crate) fn write(&mut self, layer: usize, keys: &[f32], values: &[f32], count: usize) {
        let (heads, dim, precision) = (self.kv_heads, self.head_dim, self.precision);
        debug_assert_eq!(keys.len(), heads * count * dim);
        debug_assert_eq!(values.len(), keys.len());
        let (key_depth, value_depth) = (precision.key_depth(dim), precision.value_depth(dim));
        let pack = precision.pack();
        let pages = &mut self.layers[layer];
        for i in 0..count {
            let position = self.len + i;
            let (index, slot) = (position / PAGE, position % PAGE);
            while pages.len() <= index {
                pages.push(Arc::new(Page {
                    keys: Rows::zeros(precision, heads * PAGE, key_depth),
                    values: Rows::zeros(precision, heads * PAGE, value_depth),
                }));
            }
            // Copy-on-write: a page shared with a fork is duplicated before the write.
            let page = Arc::make_mut(&mut pages[index]);
            for h in 0..heads {
                let from = (i * heads + h) * dim;
                let vector = h * PAGE + slot;
                let (key, value) = (&keys[from..from + dim], &values[from..from + dim]);
                page.keys.write(
                    vector,
                    key,
                    |d| key_index(h, slot, d, key_depth, pack),
                    true,
                );
                let at = |d| value_index(h, slot, d, value_depth, precision);
                page.values.write(vector, value, at, false);
            }
        }
    }

    /// Marks `count` new positions as filled once every layer has written them.
    pub(crate) fn advance(&mut self, count: usize) {
        self.len += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key and value of `head` at `position`, as stored (8-bit entries dequantized).
    fn entry_at(
        cache: &KvCache,
        layer: usize,
        head: usize,
        position: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let page = &cache.pages(layer)[position / PAGE];
        let (dim, slot, precision) = (cache.head_dim, position % PAGE, cache.precision);
        let pack = precision.pack();
        let (key_depth, value_depth) = (precision.key_depth(dim), precision.value_depth(dim));
        let vector = head * PAGE + slot;
        // 8-bit keys are stored as `q + 128`, values as signed bytes.
        let read = |rows: &Rows, at: usize, bias: i32| match rows {
            Rows::F32(v) => v[at],
            Rows::Bf16(v) => bf16::from_bits(v[at]).to_f32(),
            Rows::Q8 { data, scales } => {
                let q = if bias == 0 {
                    data[at] as i8 as i32
                } else {
                    data[at] as i32 - bias
                };
                q as f32 * scales[vector]
            }
        };
        let key_at = |d| key_index(head, slot, d, key_depth, pack);
        let value_at = |d| value_index(head, slot, d, value_depth, precision);
        let keys = (0..dim).map(|d| read(&page.keys, key_at(d), 128));
        let values = (0..dim).map(|d| read(&page.values, value_at(d), 0));
        (keys.collect(), values.collect())
    }

    /// The key of `head` at `position`, after checking that the value (written equal to
    /// it) reads back the same.
    fn key_at(cache: &KvCache, layer: usize, head: usize, position: usize) -> Vec<f32> {
        let (keys, values) = entry_at(cache, layer, head, position);
        assert_eq!(keys, values, "the test writes equal keys and values");
        keys
    }

    /// Whether `got` is `expected` as the cache's precision stores it: exactly for f32 and
    /// for bf16 (the test's values are small integers), within half a quantization step
    /// for 8 bits.
    fn stored_as(precision: KvPrecision, got: &[f32], expected: &[f32]) -> bool {
        let max = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
        let step = match precision {
            KvPrecision::Q8 => max / 127.0,
            _ => 0.0,
        };
        got.len() == expected.len()
            && got
                .iter()
                .zip(expected)
                .all(|(a, b)| (a - b).abs() <= step / 2.0 * 1.0001)
    }

    #[test]
    fn writes_span_pages_and_forks_copy_on_write() {
        for precision in [KvPrecision::F32, KvPrecision::Bf16, KvPrecision::Q8] {
            let (heads, dim) = (2, 4);
            // Small integers: exact in bf16 too.
            let expected =
                |h: usize, position: usize, d: usize| (h * 100 + position % 48 * 2 + d % 2) as f32;
            let row = |h, position| {
                (0..dim)
                    .map(|d| expected(h, position, d))
                    .collect::<Vec<_>>()
            };
            let mut cache = KvCache::new(1, heads, dim, precision);
            // 300 positions in chunks of 7: several pages, chunks straddling page edges.
            let mut written = 0;
            while written < 300 {
                let count = 7.min(300 - written);
                let keys: Vec<f32> = (0..heads * count * dim)
                    .map(|i| {
                        let (position, h, d) = (i / (heads * dim), i / dim % heads, i % dim);
                        expected(h, written + position, d)
                    })
                    .collect();
                cache.write(0, &keys, &keys, count);
                cache.advance(count);
                written += count;
            }
            assert_eq!(cache.len(), 300);
            assert_eq!(cache.pages(0).len(), 300usize.div_ceil(PAGE));
            for position in [0, 127, 128, 299] {
                let key = key_at(&cache, 0, 1, position);
                assert!(
                    stored_as(precision, &key, &row(1, position)),
                    "{precision:?} {key:?}"
                );
            }

            let mut fork = cache.fork();
            fork.truncate(201);
            assert_eq!(fork.pages(0).len(), 2);
            fork.write(0, &vec![-1.0; heads * dim], &vec![-1.0; heads * dim], 1);
            fork.advance(1);
            // The fork's write copied page 1; the parent still sees its own value.
            assert_eq!(key_at(&fork, 0, 0, 201), vec![-1.0; dim]);
            let parent = key_at(&cache, 0, 0, 201);
            assert!(stored_as(precision, &parent, &row(0, 201)));
            assert!(Arc::ptr_eq(&fork.pages(0)[0], &cache.pages(0)[0]));
            assert!(!Arc::ptr_eq(&fork.pages(0)[1], &cache.pages(0)[1]));
        }
    }
}
