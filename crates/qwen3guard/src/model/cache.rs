//! The key/value cache of one sequence, in fixed-size pages.
//!
//! A cache belongs to one sequence (a Gen request or a Stream session), never to the model,
//! so that one loaded model serves any number of sequences without locks. Positions live in
//! pages of 128: appending writes only the new positions, a long session never copies what
//! it holds into a bigger buffer (nor needs the old and the new buffer at once), and a fork
//! shares every page with its parent until one of them writes to it, so that many requests
//! can start from one cached preamble without copying it.
//!
//! Keys and values are stored in f32 for f32 models (exact parity with the reference) and
//! in bf16 for reduced precisions, as a bf16 reference stores them: half the memory, and
//! half the bytes that attention reads for every new token. Within a page, each head's
//! values are rows `(PAGE, head_dim)`, and its keys are two groups of 64 positions in the
//! weights' [`Panels`](crate::model::Panels) layout (each feature, or pair of features in
//! bf16, of 64 positions side by side), so that query-key scores run on the same
//! broadcast kernels as the weight products.

use std::sync::Arc;

use half::bf16;

use crate::model::panels::GROUP;

/// Positions per page.
pub const PAGE: usize = 128;

/// How cached keys and values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvPrecision {
    /// As computed.
    F32,
    /// Rounded to bfloat16 (raw bits).
    Bf16,
}

/// The entries of one page, `kv_heads * PAGE * head_dim` of them, in the cache's
/// precision.
#[derive(Debug, Clone)]
pub enum Rows {
    /// f32 values.
    F32(Vec<f32>),
    /// bf16 bits.
    Bf16(Vec<u16>),
}

impl Rows {
    fn zeros(precision: KvPrecision, len: usize) -> Self {
        match precision {
            KvPrecision::F32 => Rows::F32(vec![0.0; len]),
            KvPrecision::Bf16 => Rows::Bf16(vec![0; len]),
        }
    }

    /// Writes `values` from element `at` on, rounding them if the rows are bf16.
    fn write(&mut self, at: usize, values: &[f32]) {
        match self {
            Rows::F32(rows) => rows[at..at + values.len()].copy_from_slice(values),
            Rows::Bf16(rows) => {
                for (d, &v) in rows[at..at + values.len()].iter_mut().zip(values) {
                    *d = bf16::from_f32(v).to_bits();
                }
            }
        }
    }

    /// Writes the key `values` of head `head` at `slot` in the grouped layout.
    fn write_key(&mut self, head: usize, slot: usize, values: &[f32]) {
        let dim = values.len();
        match self {
            Rows::F32(rows) => {
                for (d, &v) in values.iter().enumerate() {
                    rows[key_index(head, slot, d, dim, 1)] = v;
                }
            }
            Rows::Bf16(rows) => {
                for (d, &v) in values.iter().enumerate() {
                    rows[key_index(head, slot, d, dim, 2)] = bf16::from_f32(v).to_bits();
                }
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Rows::F32(rows) => rows.len() * 4,
            Rows::Bf16(rows) => rows.len() * 2,
        }
    }
}

/// Positions per key group: the weights' panel group, one register tile of scores.
pub const KEY_GROUP: usize = GROUP;

/// Where feature `d` of the key of `head` at `slot` lives in a page: head-major, then the
/// group of 64 slots, then runs of `pack` features with the group's 64 slots side by side.
fn key_index(head: usize, slot: usize, d: usize, dim: usize, pack: usize) -> usize {
    head * PAGE * dim
        + (slot / KEY_GROUP) * KEY_GROUP * dim
        + (d / pack) * pack * KEY_GROUP
        + (slot % KEY_GROUP) * pack
        + d % pack
}

/// One layer's keys and values for `PAGE` consecutive positions.
#[derive(Debug, Clone)]
pub struct Page {
    /// Keys, per head two groups of 64 positions in the panel layout.
    pub keys: Rows,
    /// Values, `(kv_heads, PAGE, head_dim)`.
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
        let pages = &mut self.layers[layer];
        for i in 0..count {
            let position = self.len + i;
            let (index, slot) = (position / PAGE, position % PAGE);
            while pages.len() <= index {
                pages.push(Arc::new(Page {
                    keys: Rows::zeros(precision, heads * PAGE * dim),
                    values: Rows::zeros(precision, heads * PAGE * dim),
                }));
            }
            // Copy-on-write: a page shared with a fork is duplicated before the write.
            let page = Arc::make_mut(&mut pages[index]);
            for h in 0..heads {
                let from = (i * heads + h) * dim;
                let to = (h * PAGE + slot) * dim;
                page.keys.write_key(h, slot, &keys[from..from + dim]);
                page.values.write(to, &values[from..from + dim]);
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

    fn key_at(cache: &KvCache, layer: usize, head: usize, position: usize) -> Vec<f32> {
        let page = &cache.pages(layer)[position / PAGE];
        let dim = cache.head_dim;
        let at = |d, pack| key_index(head, position % PAGE, d, dim, pack);
        let value_at = (head * PAGE + position % PAGE) * dim;
        let (keys, values): (Vec<f32>, Vec<f32>) = match (&page.keys, &page.values) {
            (Rows::F32(k), Rows::F32(v)) => (
                (0..dim).map(|d| k[at(d, 1)]).collect(),
                v[value_at..value_at + dim].to_vec(),
            ),
            (Rows::Bf16(k), Rows::Bf16(v)) => {
                let widen = |b: u16| bf16::from_bits(b).to_f32();
                (
                    (0..dim).map(|d| widen(k[at(d, 2)])).collect(),
                    v[value_at..value_at + dim]
                        .iter()
                        .map(|&b| widen(b))
                        .collect(),
                )
            }
            _ => panic!("keys and values in different precisions"),
        };
        assert_eq!(keys, values, "the test writes equal keys and values");
        keys
    }

    #[test]
    fn writes_span_pages_and_forks_copy_on_write() {
        for precision in [KvPrecision::F32, KvPrecision::Bf16] {
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
                assert_eq!(key_at(&cache, 0, 1, position), row(1, position));
            }

            let mut fork = cache.fork();
            fork.truncate(201);
            assert_eq!(fork.pages(0).len(), 2);
            fork.write(0, &vec![-1.0; heads * dim], &vec![-1.0; heads * dim], 1);
            fork.advance(1);
            // The fork's write copied page 1; the parent still sees its own value.
            assert_eq!(key_at(&fork, 0, 0, 201), vec![-1.0; dim]);
            assert_eq!(key_at(&cache, 0, 0, 201), row(0, 201));
            assert!(Arc::ptr_eq(&fork.pages(0)[0], &cache.pages(0)[0]));
            assert!(!Arc::ptr_eq(&fork.pages(0)[1], &cache.pages(0)[1]));
        }
    }
}
