//! Typed view of a checkpoint's `config.json`.
//!
//! Field names follow the Hugging Face config so that the file deserialises directly.
//! Two generations of the format exist: transformers 4.5x writes `rope_theta` and
//! `rope_scaling` at the top level, newer versions nest them in `rope_parameters`. Both are
//! accepted; anything this engine cannot compute faithfully (RoPE scaling, sliding windows,
//! attention biases) is refused when the config is read, with the reason.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// Which Qwen3Guard model a checkpoint holds, decided by `architectures`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `Qwen3ForCausalLM`: writes its verdict as text.
    Gen,
    /// `Qwen3ForGuardModel`: classifies every token with its heads.
    Stream,
}

impl Variant {
    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Gen => "Gen",
            Variant::Stream => "Stream",
        }
    }
}

/// The raw JSON as written by transformers; resolved into [`Qwen3Config`].
#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default)]
    architectures: Vec<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    use_sliding_window: bool,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

fn default_eps() -> f64 {
    1e-6
}

fn default_act() -> String {
    "silu".to_string()
}

/// The backbone's hyper-parameters, validated.
#[derive(Debug, Clone)]
pub struct Qwen3Config {
    /// Rows of the embedding matrix (151,936 for the published models).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// The context length.
    pub max_position_embeddings: usize,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Whether `lm_head` reuses `embed_tokens`.
    pub tie_word_embeddings: bool,
}

/// One classification head's labels, indexed by the head's output row.
#[derive(Debug, Clone)]
pub struct LabelMap(pub Vec<String>);

impl LabelMap {
    /// The label of output row `i`.
    pub fn label(&self, i: usize) -> &str {
        self.0.get(i).map(String::as_str).unwrap_or("?")
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The Stream variant's extra keys: head sizes and label maps.
#[derive(Debug, Clone)]
pub struct GuardHeadsConfig {
    /// Width of the heads' shared pre-projection.
    pub guard_inner_size: usize,
    /// Response risk labels (`response_risk_level_map`).
    pub response_risk: LabelMap,
    /// Response categories (`response_category_map`).
    pub response_category: LabelMap,
    /// Prompt risk labels (`query_risk_level_map`).
    pub query_risk: LabelMap,
    /// Prompt categories (`query_category_map`).
    pub query_category: LabelMap,
}

/// Everything `config.json` says, validated.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Gen or Stream.
    pub variant: Variant,
    /// The backbone.
    pub backbone: Qwen3Config,
    /// The Stream heads; `None` for Gen.
    pub heads: Option<GuardHeadsConfig>,
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses config text; `path` only names the source in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let variant = match raw.architectures.first().map(String::as_str) {
            Some("Qwen3ForCausalLM") => Variant::Gen,
            Some("Qwen3ForGuardModel") => Variant::Stream,
            Some(other) => return Err(Error::UnknownArchitecture(other.to_string())),
            None => return Err(Error::UnknownArchitecture(String::new())),
        };
        let backbone = resolve_backbone(&raw, path)?;
        let heads = match variant {
            Variant::Gen => None,
            Variant::Stream => Some(resolve_heads(&raw.extra, path)?),
        };
        Ok(ModelConfig {
            variant,
            backbone,
            heads,
        })
    }
}

fn resolve_backbone(raw: &RawConfig, path: &Path) -> Result<Qwen3Config> {
    if raw.hidden_act != "silu" {
        return Err(Error::Unsupported(format!(
            "hidden_act {:?} (only silu)",
            raw.hidden_act
        )));
    }
    if raw.attention_bias {
        return Err(Error::Unsupported("attention_bias true".into()));
    }
    if raw.use_sliding_window {
        return Err(Error::Unsupported("use_sliding_window true".into()));
    }
    let rope_theta = resolve_rope_theta(raw)?;
    let heads = raw.num_attention_heads;
    let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
    let positive = [
        ("vocab_size", raw.vocab_size),
        ("hidden_size", raw.hidden_size),
        ("intermediate_size", raw.intermediate_size),
        ("num_hidden_layers", raw.num_hidden_layers),
        ("num_attention_heads", heads),
        ("num_key_value_heads", kv_heads),
        ("max_position_embeddings", raw.max_position_embeddings),
    ];
    for (key, value) in positive {
        if value == 0 {
            return Err(Error::config(path, format!("`{key}` must be positive")));
        }
    }
    if !heads.is_multiple_of(kv_heads) {
        return Err(Error::config(
            path,
            format!("`num_attention_heads` ({heads}) is not a multiple of `num_key_value_heads` ({kv_heads})"),
        ));
    }
    let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / heads);
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err(Error::config(
            path,
            format!("`head_dim` ({head_dim}) must be even and positive for RoPE"),
        ));
    }
    Ok(Qwen3Config {
        vocab_size: raw.vocab_size,
        hidden_size: raw.hidden_size,
        intermediate_size: raw.intermediate_size,
        num_hidden_layers: raw.num_hidden_layers,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        max_position_embeddings: raw.max_position_embeddings,
        rms_norm_eps: raw.rms_norm_eps,
        rope_theta,
        tie_word_embeddings: raw.tie_word_embeddings,
    })
}

/// RoPE settings: `rope_parameters` (new form) wins over the top-level keys (old form).
/// Only plain RoPE is implemented; a scaled variant would silently change every logit.
fn resolve_rope_theta(raw: &RawConfig) -> Result<f64> {
    let scaling = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
    let mut theta = raw.rope_theta;
    if let Some(params) = scaling.filter(|v| !v.is_null()) {
        let kind = params
            .get("rope_type")
            .or_else(|| params.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if kind != "default" {
            return Err(Error::Unsupported(format!("RoPE scaling type {kind:?}")));
        }
        if let Some(t) = params.get("rope_theta").and_then(Value::as_f64) {
            theta = Some(t);
        }
    }
    // transformers' Qwen3Config default.
    Ok(theta.unwrap_or(10_000.0))
}

fn resolve_heads(extra: &BTreeMap<String, Value>, path: &Path) -> Result<GuardHeadsConfig> {
    let size = |key: &str| -> Result<usize> {
        extra
            .get(key)
            .and_then(Value::as_u64)
            .filter(|&v| v > 0)
            .map(|v| v as usize)
            .ok_or_else(|| {
                Error::config(
                    path,
                    format!("Stream checkpoint needs a positive integer `{key}`"),
                )
            })
    };
    let guard_inner_size = size("guard_inner_size")?;
    let map = |key: &str, count_key: &str| -> Result<LabelMap> {
        let expected = size(count_key)?;
        let labels = label_map(extra.get(key), key, path)?;
        if labels.len() != expected {
            return Err(Error::config(
                path,
                format!(
                    "`{key}` has {} labels but `{count_key}` is {expected}",
                    labels.len()
                ),
            ));
        }
        Ok(labels)
    };
    Ok(GuardHeadsConfig {
        guard_inner_size,
        response_risk: map("response_risk_level_map", "num_risk_level")?,
        response_category: map("response_category_map", "num_category")?,
        query_risk: map("query_risk_level_map", "num_query_risk_level")?,
        query_category: map("query_category_map", "num_query_category")?,
    })
}

/// A label map is `{"0": "Safe", "1": "Unsafe", ...}`; every index from 0 must be present.
fn label_map(value: Option<&Value>, key: &str, path: &Path) -> Result<LabelMap> {
    let object = value.and_then(Value::as_object).ok_or_else(|| {
        Error::config(
            path,
            format!("Stream checkpoint needs the label map `{key}` (an object)"),
        )
    })?;
    let mut labels = vec![None; object.len()];
    for (index, label) in object {
        let i: usize = index
            .parse()
            .ok()
            .filter(|&i| i < labels.len())
            .ok_or_else(|| {
                Error::config(
                    path,
                    format!(
                        "`{key}` has a key {index:?} that is not an index 0..{}",
                        labels.len()
                    ),
                )
            })?;
        let label = label
            .as_str()
            .ok_or_else(|| Error::config(path, format!("`{key}`[{index}] is not a string")))?;
        labels[i] = Some(label.to_string());
    }
    let labels = labels
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::config(path, format!("`{key}` has duplicate indices")))?;
    Ok(LabelMap(labels))
}

impl ModelConfig {
    /// Every tensor the model reads, with its shape, in checkpoint key order. Used to
    /// write random checkpoints of a real shape; loading checks the same shapes.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let c = &self.backbone;
        let (h, i, d) = (c.hidden_size, c.intermediate_size, c.head_dim);
        let (q, kv) = (c.num_attention_heads * d, c.num_key_value_heads * d);
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![c.vocab_size, h],
        )];
        for l in 0..c.num_hidden_layers {
            let p = format!("model.layers.{l}");
            out.extend([
                (format!("{p}.input_layernorm.weight"), vec![h]),
                (format!("{p}.self_attn.q_proj.weight"), vec![q, h]),
                (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
                (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
                (format!("{p}.self_attn.o_proj.weight"), vec![h, q]),
                (format!("{p}.self_attn.q_norm.weight"), vec![d]),
                (format!("{p}.self_attn.k_norm.weight"), vec![d]),
                (format!("{p}.post_attention_layernorm.weight"), vec![h]),
                (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
                (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
                (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
            ]);
        }
        out.push(("model.norm.weight".to_string(), vec![h]));
        if self.variant == Variant::Gen && !c.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![c.vocab_size, h]));
        }
        if let Some(heads) = &self.heads {
            let g = heads.guard_inner_size;
            for (prefix, category_head, risk, cats) in [
                (
                    "",
                    "category_head",
                    &heads.response_risk,
                    &heads.response_category,
                ),
                (
                    "query_",
                    "query_category_head",
                    &heads.query_risk,
                    &heads.query_category,
                ),
            ] {
                out.extend([
                    (
                        format!("{prefix}risk_level_category_pre.weight"),
                        vec![g, h],
                    ),
                    (
                        format!("{prefix}risk_level_category_layernorm.weight"),
                        vec![g],
                    ),
                    (
                        format!("{prefix}risk_level_head.weight"),
                        vec![risk.len(), g],
                    ),
                    (format!("{category_head}.weight"), vec![cats.len(), g]),
                ]);
            }
        }
        out
    }
}
