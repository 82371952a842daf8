//! The key/value cache of one sequence.
//!
//! A cache belongs to one sequence (a Gen request or a Stream session), never to the model,
//! so that one loaded model serves any number of sequences without locks. Buffers grow by
//! half their size when full and are written in place, so appending a token copies only that token's keys
//! and values; attention reads a view of the filled part.

use candle_core::Tensor;

use crate::error::Result;

/// Buffers grow in multiples of this many positions.
const GRANULE: usize = 64;

/// Keys and values of one layer: buffers of shape `(1, kv_heads, capacity, head_dim)`.
#[derive(Debug, Clone, Default)]
struct LayerCache {
    keys: Option<Tensor>,
    values: Option<Tensor>,
}

/// The cache of every layer, plus how many positions it holds.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    len: usize,
}

impl KvCache {
    /// An empty cache for a model with `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        KvCache {
            layers: vec![LayerCache::default(); num_layers],
            len: 0,
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

    /// Forgets every position from `len` on (cheap: the buffers stay allocated).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// An independent copy (the buffers are duplicated, not shared), for forking a cached
    /// prefix into several requests.
    pub fn deep_clone(&self) -> Result<Self> {
        let copy = |t: &Option<Tensor>| -> Result<Option<Tensor>> {
            Ok(match t {
                Some(t) => Some(t.copy()?),
                None => None,
            })
        };
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(LayerCache {
                    keys: copy(&l.keys)?,
                    values: copy(&l.values)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            layers,
            len: self.len,
        })
    }

    /// Bytes held by the buffers.
    pub fn allocated_bytes(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| [&l.keys, &l.values])
            .flatten()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }

    /// Layer `layer`'s whole key and value buffers `(1, kv_heads, capacity, head_dim)`
    /// (positions past the filled ones are stale).
    pub(crate) fn buffers(&self, layer: usize) -> Option<(&Tensor, &Tensor)> {
        let entry = self.layers.get(layer)?;
        Some((entry.keys.as_ref()?, entry.values.as_ref()?))
    }

    /// Marks `count` new positions as filled once every layer has appended them.
    pub(crate) fn advance(&mut self, count: usize) {
        self.len += count;
    }

    /// Writes layer `layer`'s new keys and values `(1, kv_heads, new, head_dim)` after the
    /// cached positions and returns views of everything cached, new positions included.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        keys: &Tensor,
        values: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let start = self.len;
        let entry = &mut self.layers[layer];
        let keys = write(&mut entry.keys, keys, start)?;
        let values = write(&mut entry.values, values, start)?;
        Ok((keys, values))
    }
}

/// Writes `new` at position `start` of `buffer` (growing it) and returns the filled view.
fn write(buffer: &mut Option<Tensor>, new: &Tensor, start: usize) -> Result<Tensor> {
    let (batch, heads, count, dim) = new.dims4()?;
    let needed = start + count;
    let capacity = buffer.as_ref().map_or(0, |b| b.dim(2).unwrap_or(0));
    if needed > capacity {
        // Grow by half: amortised appends stay cheap without doubling a long session's
        // memory at the last step.
        let grown = needed.max(capacity + capacity / 2).div_ceil(GRANULE) * GRANULE;
        let fresh = Tensor::zeros((batch, heads, grown, dim), new.dtype(), new.device())?;
        if let Some(old) = buffer.as_ref() {
            if start > 0 {
                fresh.slice_set(&old.narrow(2, 0, start)?.contiguous()?, 2, 0)?;
            }
        }
        *buffer = Some(fresh);
    }
    let Some(buf) = buffer.as_ref() else {
        unreachable!("allocated above")
    };
    buf.slice_set(&new.contiguous()?, 2, start)?;
    Ok(buf.narrow(2, 0, needed)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn append_grows_and_keeps_earlier_positions() -> Result<()> {
        let device = Device::Cpu;
        let mut cache = KvCache::new(1);
        let mut all = Vec::new();
        for step in 0..70u32 {
            let k = Tensor::full(step as f32, (1, 2, 1, 4), &device)?;
            let (keys, values) = cache.append(0, &k, &k)?;
            cache.advance(1);
            assert_eq!(keys.dims(), &[1, 2, step as usize + 1, 4]);
            assert_eq!(values.dims(), keys.dims());
            all.push(step as f32);
            let seen: Vec<f32> = keys
                .narrow(1, 0, 1)?
                .narrow(3, 0, 1)?
                .flatten_all()?
                .to_vec1()?;
            assert_eq!(seen, all);
        }
        assert_eq!(cache.len(), 70);
        let fork = cache.deep_clone()?;
        cache.truncate(10);
        assert_eq!(cache.len(), 10);
        assert_eq!(fork.len(), 70);
        assert!(fork.allocated_bytes() >= 2 * 2 * 70 * 4 * 4);
        Ok(())
    }
}
