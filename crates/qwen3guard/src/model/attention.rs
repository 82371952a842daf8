//! Grouped-query self-attention with per-head q/k RMSNorm and RoPE (Qwen3).

use candle_core::{DType, Tensor, D};

use crate::checkpoint::{Qwen3Config, Weights};
use crate::error::Result;
use crate::model::cache_attention::attend_cached;
use crate::model::{linear, matmul, stacked_linear, KvCache, Linear, RmsNorm, Rotary};

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

        // 3. Append to the cache; attend over everything cached: T = offset + L.
        let (keys, values) = cache.append(layer, &k, &v)?;
        let total = keys.dim(2)?;
        // On the CPU, read the cache in place (see `cache_attention`).
        if let Some((key_buf, value_buf)) = cache.buffers(layer) {
            if let Some(out) = attend_cached(&q, key_buf, value_buf, offset, self.scale as f32)? {
                return self.o_proj.forward(&out);
            }
        }

        // 4. Grouped-query attention without repeating K/V: the `rep` query heads that
        //    share a KV head are stacked along the sequence axis,
        //    (B, H, L, D) -> (B, KV, rep*L, D).
        let rep = self.heads / self.kv_heads;
        let q = q.reshape((b, self.kv_heads, rep * len, d))?;
        let scores = (matmul(&q, &keys.transpose(2, 3)?)? * self.scale)?;
        let mut scores = scores.reshape((b, self.heads, len, total))?;
        if len > 1 {
            scores = scores.broadcast_add(&causal_mask(len, offset, scores.dtype(), x.device())?)?;
        }
        // Softmax in f32 whatever the compute dtype, as the reference does.
        let dtype = scores.dtype();
        let probs = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?
            .to_dtype(dtype)?
            .reshape((b, self.kv_heads, rep * len, total))?;
        let out = matmul(&probs, &values)?;

        // 5. (B, KV, rep*L, D) -> (B, H, L, D) -> (B, L, H*D) -> o_proj.
        let out = out
            .reshape((b, self.heads, len, d))?
            .transpose(1, 2)?
            .reshape((b, len, self.heads * d))?;
        Ok(self.o_proj.forward(&out)?)
    }
}

/// The additive causal mask for `len` new positions after `offset` cached ones:
/// `(len, offset + len)`, `-inf` where a key lies in a query's future.
fn causal_mask(
    len: usize,
    offset: usize,
    dtype: DType,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let total = offset + len;
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (len, total), device)?.to_dtype(dtype)?)
}
