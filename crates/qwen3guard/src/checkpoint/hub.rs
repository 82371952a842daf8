//! Fetching a checkpoint by Hugging Face repo id into the standard Hugging Face cache.
//!
//! Files already in the cache (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`) are used
//! without touching the network, so a model downloaded once, by this tool or by Python,
//! works offline. `HF_ENDPOINT` points the download at a mirror.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo};

use crate::error::{Error, Result};

/// Files every checkpoint needs besides its weights.
const REQUIRED: [&str; 3] = ["config.json", "tokenizer.json", "tokenizer_config.json"];
/// Files fetched when the repo has them.
const OPTIONAL: [&str; 2] = ["generation_config.json", "chat_template.jinja"];
const INDEX: &str = "model.safetensors.index.json";
const SINGLE: &str = "model.safetensors";

/// Whether `spec` looks like `owner/name` rather than a path.
pub fn looks_like_repo_id(spec: &str) -> bool {
    let mut parts = spec.split('/');
    let (Some(owner), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    valid(owner) && valid(name)
}

/// Makes sure every file of `repo_id` is in the cache and returns the snapshot directory.
/// `progress` shows a progress bar per downloaded file.
pub fn fetch(repo_id: &str, progress: bool) -> Result<PathBuf> {
    let cache = Cache::from_env();
    let api = ApiBuilder::from_env()
        .with_progress(progress)
        .build()
        .map_err(|e| download_error(repo_id, &e.to_string()))?;
    let remote = api.repo(Repo::model(repo_id.to_string()));
    let cached = cache.repo(Repo::model(repo_id.to_string()));
    let get = |name: &str| -> Result<PathBuf> {
        match cached.get(name) {
            Some(path) => Ok(path),
            None => remote
                .get(name)
                .map_err(|e| download_error(repo_id, &format!("{name}: {e}"))),
        }
    };
    let config = get(REQUIRED[0])?;
    for name in &REQUIRED[1..] {
        get(name)?;
    }
    for name in OPTIONAL {
        // Absent in many repos; a failure here is not an error.
        if cached.get(name).is_none() {
            let _ = remote.get(name);
        }
    }
    fetch_weights(&get)?;
    snapshot_dir(&config)
}

/// The weights: the sharded index and its shards if present, else the single file.
fn fetch_weights(get: &dyn Fn(&str) -> Result<PathBuf>) -> Result<()> {
    let index = match get(INDEX) {
        Ok(path) => path,
        Err(_) => {
            get(SINGLE)?;
            return Ok(());
        }
    };
    let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
    let parsed: serde_json::Value = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: index.clone(),
        source,
    })?;
    let mut shards: Vec<&str> = parsed
        .get("weight_map")
        .and_then(|m| m.as_object())
        .map(|m| m.values().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    shards.sort_unstable();
    shards.dedup();
    for shard in shards {
        get(shard)?;
    }
    Ok(())
}

fn snapshot_dir(config: &Path) -> Result<PathBuf> {
    config
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::io(config, std::io::Error::other("no parent directory")))
}

fn download_error(repo_id: &str, reason: &str) -> Error {
    Error::Download {
        repo: repo_id.to_string(),
        reason: format!(
            "{reason}. Without network access, download the checkpoint on another machine \
             (e.g. `huggingface-cli download {repo_id} --local-dir DIR`) and pass --model DIR"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_repo_id;

    #[test]
    fn repo_ids_are_told_from_paths() {
        assert!(looks_like_repo_id("Qwen/Qwen3Guard-Gen-0.6B"));
        assert!(!looks_like_repo_id("./models/x"));
        assert!(!looks_like_repo_id("/abs/path"));
        assert!(!looks_like_repo_id("a/b/c"));
        assert!(!looks_like_repo_id("../x"));
        assert!(!looks_like_repo_id("single"));
    }
}
