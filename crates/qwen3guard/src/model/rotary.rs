//! Rotary position embeddings (RoPE), non-interleaved as in Qwen3.
//!
//! The angles are computed in f32 exactly as transformers does (inverse frequencies
//! `1 / theta^(2i/d)` in f32, then `cos`/`sin` of position times frequency), so that f32
//! results match the reference to rounding. They are computed per forward pass for its new
//! positions only (a few microseconds) rather than held as a table for every position the
//! model allows (tens of megabytes).

use crate::checkpoint::Qwen3Config;

/// The inverse frequencies of one model.
#[derive(Debug, Clone)]
pub struct Rotary {
    inv_freq: Vec<f32>,
}

/// Cosines and sines for a run of consecutive positions, `(len, head_dim / 2)` each.
#[derive(Debug, Clone)]
pub struct RopeTables {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

impl Rotary {
    /// The frequencies of `cfg`'s heads.
    pub fn new(cfg: &Qwen3Config) -> Self {
        let half = cfg.head_dim / 2;
        let theta = cfg.rope_theta as f32;
        let inv_freq = (0..half)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / cfg.head_dim as f32))
            .collect();
        Rotary { inv_freq }
    }

    /// Tables for positions `offset..offset + len`.
    pub fn tables(&self, offset: usize, len: usize) -> RopeTables {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in offset..offset + len {
            for f in &self.inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        RopeTables { cos, sin, half }
    }
}

impl RopeTables {
    /// Rotates each head of `heads` (one position's heads, `head_dim` values each) by the
    /// angles of the `i`-th position of these tables: `x * cos + rotate_half(x) * sin`.
    pub fn rotate(&self, i: usize, heads: &mut [f32]) {
        let half = self.half;
        let (cos, sin) = (&self.cos[i * half..][..half], &self.sin[i * half..][..half]);
        for head in heads.chunks_exact_mut(2 * half) {
            let (a, b) = head.split_at_mut(half);
            for j in 0..half {
                let (x1, x2) = (a[j], b[j]);
                a[j] = x1 * cos[j] - x2 * sin[j];
                b[j] = x2 * cos[j] + x1 * sin[j];
            }
        }
    }
}
