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
//! half the bytes that attention reads for every new token.

use std::sync::Arc;

use half::bf16;

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

/// The rows of one page, `(kv_heads, PAGE, head_dim)`, in the cache's precision.
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

    fn bytes(&self) -> usize {
        match self {
            Rows::F32(rows) => rows.len() * 4,
            Rows::Bf16(rows) => rows.len() * 2,
        }
    }
}

/// One layer's keys and values for `PAGE` consecutive positions.
#[derive(Debug, Clone)]
pub struct Page {
    /// Keys, `(kv_heads, PAGE, head_dim)`.
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
    pub fn new(num_layers: usize, kv_heads: usize, head_dim: usize, precision: KvPrecision) -> Self {
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
    /// ones; `keys` and `values` are `(kv_heads, count, head_dim)`.
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
                let from = (h * count + i) * dim;
                let to = (h * PAGE + slot) * dim;
                page.keys.write(to, &keys[from..from + dim]);
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
        let at = (head * PAGE + position % PAGE) * cache.head_dim;
        match &page.keys {
            Rows::F32(rows) => rows[at..at + cache.head_dim].to_vec(),
            Rows::Bf16(rows) => rows[at..at + cache.head_dim]
                .iter()
                .map(|&b| bf16::from_bits(b).to_f32())
                .collect(),
        }
    }

    #[test]
    fn writes_span_pages_and_forks_copy_on_write() {
        for precision in [KvPrecision::F32, KvPrecision::Bf16] {
            let (heads, dim) = (2, 4);
            let mut cache = KvCache::new(1, heads, dim, precision);
            // 300 positions in chunks of 7: several pages, chunks straddling page edges.
            let mut written = 0;
            while written < 300 {
                let count = 7.min(300 - written);
                let keys: Vec<f32> = (0..heads * count * dim)
                    .map(|i| {
                        let (h, rest) = (i / (count * dim), i % (count * dim));
                        (h * 100 + (written + rest / dim) % 100) as f32
                    })
                    .collect();
                cache.write(0, &keys, &keys, count);
                cache.advance(count);
                written += count;
            }
            assert_eq!(cache.len(), 300);
            assert_eq!(cache.pages(0).len(), 300usize.div_ceil(PAGE));
            for position in [0, 127, 128, 299] {
                assert_eq!(key_at(&cache, 0, 1, position), vec![(100 + position % 100) as f32; dim]);
            }

            let mut fork = cache.fork();
            fork.truncate(201);
            assert_eq!(fork.pages(0).len(), 2);
            fork.write(0, &vec![-1.0; heads * dim], &vec![-1.0; heads * dim], 1);
            fork.advance(1);
            // The fork's write copied page 1; the parent still sees its own value.
            assert_eq!(key_at(&fork, 0, 0, 201), vec![-1.0; dim]);
            assert_eq!(key_at(&cache, 0, 0, 201), vec![1.0; dim]);
            assert!(Arc::ptr_eq(&fork.pages(0)[0], &cache.pages(0)[0]));
            assert!(!Arc::ptr_eq(&fork.pages(0)[1], &cache.pages(0)[1]));
        }
    }
}
