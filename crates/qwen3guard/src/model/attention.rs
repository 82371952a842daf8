//! Grouped-query self-attention with per-head q/k RMSNorm and RoPE (Qwen3).

use candle_core::{DType, Tensor, D};

use crate::checkpoint::{Qwen3Config, Weights};
use crate::error::Result;
use crate::model::cache_attention::attend_cached;
use crate::model::{linear, stacked_linear, KvCache, Linear, RmsNorm, Rotary};

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

    /// `(1, L, hidden) -> (1, L, hidden)` for `L` new positions after those in `cache`.
    pub fn forward(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        cache: &mut KvCache,
        layer: usize,
    ) -> Result<Tensor> {
        let (b, len, _) = x.dims3()?;
        let offset = cache.len();
        let d = self.head_dim;

        // 1. Project (one product for q, k, v) and split heads: (B, L, H*D) ->
        //    (B, L, H, D), norm each head, -> (B, H, L, D).
        let qkv = self.qkv_proj.forward(x)?;
        let (q_width, kv_width) = (self.heads * d, self.kv_heads * d);
        let q = qkv
            .narrow(D::Minus1, 0, q_width)?
            .reshape((b, len, self.heads, d))?;
        let q = self.q_norm.forward(&q)?.transpose(1, 2)?;
        let k = qkv
            .narrow(D::Minus1, q_width, kv_width)?
            .reshape((b, len, self.kv_heads, d))?;
        let k = self.k_norm.forward(&k)?.transpose(1, 2)?;
        let v = qkv
            .narrow(D::Minus1, q_width + kv_width, kv_width)?
            .reshape((b, len, self.kv_heads, d))?
            .transpose(1, 2)?;

        // 2. Rotate queries and keys by their absolute positions.
        let q = rotary.apply(&q, offset)?;
        let k = rotary.apply(&k, offset)?;

        // 3. Write the new keys and values to the cache, then attend over everything
        //    cached, reading the cache in place (see `cache_attention`).
        let flat = |t: Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
        };
        cache.write(layer, &flat(k)?, &flat(v)?, len);
        let out = attend_cached(&flat(q)?, cache, layer, self.heads, len, self.scale as f32)?;
        let out = Tensor::from_vec(out, (b, len, self.heads * d), x.device())?.to_dtype(x.dtype())?;
        self.o_proj.forward(&out)
    }
}
