//! Fetching a checkpoint by Hugging Face repo id into the standard Hugging Face cache.
//!
//! Files already in the cache (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`) are used
//! without touching the network, so a model downloaded once, by this tool or by Python,
//! works offline. `HF_ENDPOINT` points the download at a mirror.
//!
//! [`fetch`] reads those settings from the environment, as the Python tools do;
//! [`fetch_with`] takes them explicitly ([`HubOptions`]), for servers and tests that must
//! not depend on process-wide variables.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiRepo};
use hf_hub::{Cache, CacheRepo, Repo};

use crate::error::{Error, Result};

/// Files every checkpoint needs besides its weights.
const REQUIRED: [&str; 3] = ["config.json", "tokenizer.json", "tokenizer_config.json"];
/// Files fetched when the repo has them.
const OPTIONAL: [&str; 2] = ["generation_config.json", "chat_template.jinja"];
const INDEX: &str = "model.safetensors.index.json";
const SINGLE: &str = "model.safetensors";
/// The public Hub, when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where to download from and where the cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// Base URL of the Hub or of a mirror (a trailing slash is ignored); files are
    /// fetched from `{endpoint}/{owner}/{name}/resolve/main/{file}`.
    pub endpoint: String,
    /// The hub cache directory, the one holding `models--{owner}--{name}` folders
    /// (`$HF_HOME/hub`).
    pub cache_dir: PathBuf,
    /// Access token for gated or private repos.
    pub token: Option<String>,
    /// Show a progress bar per downloaded file.
    pub progress: bool,
}

/// The settings the Python `huggingface_hub` library would use: `HF_ENDPOINT`;
/// `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
/// `~/.cache/huggingface/hub`; `HF_TOKEN`, else the token file `$HF_HOME/token` written by
/// `huggingface-cli login`. Empty variables count as unset. `Err` names what is missing.
fn env_options(progress: bool) -> std::result::Result<HubOptions, &'static str> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let hf_home = var("HF_HOME").map(PathBuf::from).or_else(|| {
        let cache = var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|home| Path::new(&home).join(".cache")))?;
        Some(cache.join("huggingface"))
    });
    let cache_dir = match (var("HF_HUB_CACHE"), &hf_home) {
        (Some(dir), _) => PathBuf::from(dir),
        (None, Some(home)) => home.join("hub"),
        (None, None) => return Err("no Hugging Face cache directory: set HF_HOME"),
    };
    let token = var("HF_TOKEN").or_else(|| {
        let text = std::fs::read_to_string(hf_home?.join("token")).ok()?;
        Some(text.trim().to_string()).filter(|t| !t.is_empty())
    });
    Ok(HubOptions {
        endpoint: var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
        cache_dir,
        token,
        progress,
    })
}

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

/// Makes sure every file of `repo_id` is in the cache and returns the snapshot directory,
/// with the endpoint, cache and token taken from the environment as the Python tools
/// take them (`HF_ENDPOINT`, `HF_HUB_CACHE` or `HF_HOME`, `HF_TOKEN`).
/// `progress` shows a progress bar per downloaded file.
pub fn fetch(repo_id: &str, progress: bool) -> Result<PathBuf> {
    let options = env_options(progress).map_err(|reason| download_error(repo_id, reason))?;
    fetch_with(repo_id, &options)
}

/// Makes sure every file of `repo_id` is in `options.cache_dir` and returns the snapshot
/// directory holding them all.
///
/// When the cache already has a complete checkpoint nothing is sent over the network.
/// Otherwise the missing files are downloaded; if the repo has moved on since the cached
/// files were written, the new files land in a new snapshot, so the old ones are fetched
/// again into it rather than returning a directory that mixes or lacks files.
pub fn fetch_with(repo_id: &str, options: &HubOptions) -> Result<PathBuf> {
    if !looks_like_repo_id(repo_id) {
        return Err(download_error(
            repo_id,
            "not a repo id of the form owner/name",
        ));
    }
    let cache = Cache::new(options.cache_dir.clone());
    let cached = cache.repo(Repo::model(repo_id.to_string()));
    if let Some(dir) = complete_snapshot(&cached)? {
        return Ok(dir);
    }
    let api = ApiBuilder::from_cache(cache)
        .with_endpoint(options.endpoint.trim_end_matches('/').to_string())
        .with_token(options.token.clone())
        .with_progress(options.progress)
        .build()
        .map_err(|e| download_error(repo_id, &e.to_string()))?;
    let remote = api.repo(Repo::model(repo_id.to_string()));
    // Each pass resolves names against the cache's current revision (`refs/main`), which
    // a download moves to the remote's; a second pass fills the new snapshot.
    for _ in 0..2 {
        fetch_missing(repo_id, &cached, &remote)?;
        if let Some(dir) = complete_snapshot(&cached)? {
            return Ok(dir);
        }
    }
    Err(download_error(
        repo_id,
        "the repo changed while it was being downloaded; run the command again",
    ))
}

/// Downloads every file of the checkpoint that the current snapshot lacks.
fn fetch_missing(repo_id: &str, cached: &CacheRepo, remote: &ApiRepo) -> Result<()> {
    let get = |name: &str| -> std::result::Result<PathBuf, String> {
        match cached.get(name) {
            Some(path) => Ok(path),
            None => remote.download(name).map_err(|e| format!("{name}: {e}")),
        }
    };
    let fail = |reason: String| download_error(repo_id, &reason);
    for name in REQUIRED {
        get(name).map_err(fail)?;
    }
    for name in OPTIONAL {
        // Absent in many repos; a failure here is not an error.
        let _ = get(name);
    }
    let index = match cached.get(INDEX) {
        Some(index) => index,
        None if cached.get(SINGLE).is_some() => return Ok(()),
        None => match get(INDEX) {
            Ok(index) => index,
            // Usually a 404 (single-file checkpoint); if the single file fails too, both
            // reasons are shown, since either may be the real one.
            Err(no_index) => {
                return get(SINGLE)
                    .map(drop)
                    .map_err(|no_single| fail(format!("{no_index}; {no_single}")))
            }
        },
    };
    for shard in shard_names(&index)? {
        get(&shard).map_err(fail)?;
    }
    Ok(())
}

/// The snapshot directory of the cache's current revision if it holds a whole
/// checkpoint: the required files and the single weights file or the index and all its
/// shards.
fn complete_snapshot(cached: &CacheRepo) -> Result<Option<PathBuf>> {
    if REQUIRED.iter().any(|name| cached.get(name).is_none()) {
        return Ok(None);
    }
    let weights_present = match cached.get(INDEX) {
        Some(index) => shard_names(&index)?
            .iter()
            .all(|shard| cached.get(shard).is_some()),
        None => cached.get(SINGLE).is_some(),
    };
    if !weights_present {
        return Ok(None);
    }
    match cached.get(REQUIRED[0]) {
        Some(config) => snapshot_dir(&config).map(Some),
        None => Ok(None),
    }
}

/// The shard files an index lists, each a plain file name: a name with a directory part
/// would make the download write outside the snapshot.
fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let parsed: serde_json::Value = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: index.to_path_buf(),
        source,
    })?;
    let mut shards: Vec<String> = parsed
        .get("weight_map")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.values()
                .filter_map(|v| v.as_str())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    shards.sort_unstable();
    shards.dedup();
    if shards.is_empty() {
        return Err(Error::config(index, "`weight_map` lists no files"));
    }
    if let Some(bad) = shards
        .iter()
        .find(|s| s.contains(['/', '\\']) || s.as_str() == "." || s.as_str() == "..")
    {
        return Err(Error::config(
            index,
            format!("shard name {bad:?} is not a plain file name"),
        ));
    }
    Ok(shards)
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
             (e.g. `huggingface-cli download {repo_id} --local-dir DIR`) and pass --model DIR, \
             or set HF_ENDPOINT to a reachable mirror"
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
