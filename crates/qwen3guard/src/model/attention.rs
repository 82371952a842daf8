//! Grouped-query self-attention with per-head q/k RMSNorm and RoPE (Qwen3).

use rayon::prelude::*;

use crate::checkpoint::{Qwen3Config, Weights};
use crate::error::Result;
use crate::kernels::cache_attention::{attend_cached_batch, Sequence};
use crate::model::backbone::Segment;
use crate::model::rotary::RopeTables;
use crate::model::{linear, stacked_linear, Linear, RmsNorm};

/// One layer's attention (`model.layers.{i}.self_attn`).
#[derive(Debug, Clone)]
pub struct Attention {
    /// `q_proj`, `k_proj` and `v_proj` stacked: one product for all three.
    qkv_proj: Linear,
    o_proj: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    /// Loads `{prefix}.{q,k,v,o}_proj.weight` and `{prefix}.{q,k}_norm.weight`.
    pub fn new(cfg: &Qwen3Config, weights: &Weights, prefix: &str) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let (heads, kv_heads) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let names = ["q_proj", "k_proj", "v_proj"].map(|n| format!("{prefix}.{n}"));
        let names = names.each_ref().map(String::as_str);
        Ok(Attention {
            qkv_proj: stacked_linear(weights, &names, h, &[heads * d, kv_heads * d, kv_heads * d])?,
            o_proj: linear(weights, &format!("{prefix}.o_proj"), heads * d, h)?,
            q_norm: RmsNorm::new(weights, &format!("{prefix}.q_norm"), d, cfg.rms_norm_eps)?,
            k_norm: RmsNorm::new(weights, &format!("{prefix}.k_norm"), d, cfg.rms_norm_eps)?,
            heads,
            kv_heads,
            head_dim: d,
            scale: 1.0 / (d as f64).sqrt(),
        })
    }

    /// `(rows, hidden) -> (rows', hidden)` (row-major) for the new positions of the
    /// sequences `segments` (their rows in order, each after the positions in its cache).
    /// Every row's keys and values are cached; outputs are computed for each segment's last
    /// `keep` rows (`rows'` of them in all).
    pub(crate) fn forward(
        &self,
        x: &[f32],
        segments: &mut [Segment<'_>],
        layer: usize,
    ) -> Result<Vec<f32>> {
        let d = self.head_dim;
        let (q_width, kv_width) = (self.heads * d, self.kv_heads * d);
        let rows: usize = segments.iter().map(|s| s.len).sum();

        // 1. Project (one product for q, k, v, all sequences); per position, norm and
        //    rotate each query and key head: rows (rows, H*D) for queries, (rows, KV*D)
        //    for keys and values.
        let qkv = self.qkv_proj.forward_rows(x, rows)?;
        let owners: Vec<(&RopeTables, usize)> = segments
            .iter()
            .flat_map(|s| (0..s.len).map(move |i| (&s.rope, i)))
            .collect();
        let mut q = vec![0f32; rows * q_width];
        let mut k = vec![0f32; rows * kv_width];
        let mut v = vec![0f32; rows * kv_width];
        q.par_chunks_mut(q_width)
            .zip(k.par_chunks_mut(kv_width))
            .zip(v.par_chunks_mut(kv_width))
            .zip(qkv.par_chunks(q_width + 2 * kv_width))
            .zip(owners.par_iter())
            .for_each(|((((q, k), v), row), &(rope, i))| {
                let (q_in, rest) = row.split_at(q_width);
                let (k_in, v_in) = rest.split_at(kv_width);
                for (src, dst) in q_in.chunks_exact(d).zip(q.chunks_exact_mut(d)) {
                    self.q_norm.normalize(src, dst);
                }
                for (src, dst) in k_in.chunks_exact(d).zip(k.chunks_exact_mut(d)) {
                    self.k_norm.normalize(src, dst);
                }
                rope.rotate(i, q);
                rope.rotate(i, k);
                v.copy_from_slice(v_in);
            });

        // 2. Write every sequence's new keys and values to its cache, then attend over
        //    everything each caches, reading the caches in place, all sequences in one
        //    parallel pass (see `cache_attention`).
        let mut first = 0;
        for segment in segments.iter_mut() {
            let kv = first * kv_width..(first + segment.len) * kv_width;
            segment
                .cache
                .write(layer, &k[kv.clone()], &v[kv], segment.len);
            first += segment.len;
        }
        let mut sequences = Vec::with_capacity(segments.len());
        let mut first = 0;
        for segment in segments.iter() {
            let (len, keep) = (segment.len, segment.keep);
            if keep > 0 {
                sequences.push(Sequence {
                    q: &q[(first + len - keep) * q_width..(first + len) * q_width],
                    cache: &*segment.cache,
                    first: segment.cache.len() + len - keep,
                    len: keep,
                });
            }
            first += len;
        }
        let kept: usize = sequences.iter().map(|s| s.len).sum();
        let scale = self.scale as f32;
        let outs = attend_cached_batch(&sequences, layer, self.heads, scale)?;
        let out = outs.concat();
        self.o_proj.forward_rows(&out, kept)
    }
}
