//! The external helpfulness reward of the hybrid reward, over OpenRLHF's remote reward
//! protocol (`POST {"query", "prompts", "labels"?}` answered by `{"rewards": [...]}`), so
//! that any reward model served for OpenRLHF (WorldPM in the report) can be used as it is.
//!
//! The call is blocking (the server makes it on a blocking thread, the offline CLI
//! directly); it is a plain HTTP(S) POST with a timeout.

use std::time::Duration;

use serde_json::{json, Value};

/// How long one call may take: a batch of long rollouts on a large reward model takes a
/// while, but a server that never answers must not hold the request forever.
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// Why the helpfulness server gave no rewards.
#[derive(Debug, thiserror::Error)]
pub enum HelpfulnessError {
    /// The request did not get an answer (refused, timed out, not HTTP).
    #[error("the helpfulness server {url} could not be reached: {reason}")]
    Unreachable {
        /// The server's URL.
        url: String,
        /// The transport's reason.
        reason: String,
    },
    /// It answered with an error status.
    #[error("the helpfulness server {url} answered {status}: {body}")]
    Status {
        /// The server's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of its body.
        body: String,
    },
    /// It answered something other than one number per rollout.
    #[error("the helpfulness server {url} answered {problem}; expected {{\"rewards\": [one number per query]}}")]
    Answer {
        /// The server's URL.
        url: String,
        /// What was wrong.
        problem: String,
    },
}

/// A client of one helpfulness server.
#[derive(Clone)]
pub struct Helpfulness {
    url: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Helpfulness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Helpfulness")
            .field("url", &self.url)
            .finish()
    }
}

impl Helpfulness {
    /// A client posting to `url`.
    pub fn new(url: &str) -> Self {
        Helpfulness {
            url: url.to_string(),
            agent: ureq::AgentBuilder::new().timeout(TIMEOUT).build(),
        }
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The helpfulness of each rollout (`queries[i]` is the whole text, `prompts[i]` its
    /// prompt); blocking.
    pub fn rewards(
        &self,
        queries: &[String],
        prompts: &[String],
        labels: Option<&[Value]>,
    ) -> Result<Vec<f64>, HelpfulnessError> {
        let mut body = json!({"query": queries, "prompts": prompts});
        if let Some(labels) = labels {
            body["labels"] = Value::from(labels.to_vec());
        }
        let answer = match self.agent.post(&self.url).send_json(body) {
            Ok(response) => response,
            Err(ureq::Error::Status(status, response)) => {
                let body = response.into_string().unwrap_or_default();
                return Err(HelpfulnessError::Status {
                    url: self.url.clone(),
                    status,
                    body: body.chars().take(200).collect(),
                });
            }
            Err(e) => {
                return Err(HelpfulnessError::Unreachable {
                    url: self.url.clone(),
                    reason: e.to_string(),
                })
            }
        };
        let problem = |problem: String| HelpfulnessError::Answer {
            url: self.url.clone(),
            problem,
        };
        let value: Value = answer
            .into_json()
            .map_err(|e| problem(format!("no JSON ({e})")))?;
        let Some(Value::Array(rewards)) = value.get("rewards") else {
            return Err(problem("no `rewards` array".into()));
        };
        if rewards.len() != queries.len() {
            return Err(problem(format!(
                "{} rewards for {} queries",
                rewards.len(),
                queries.len()
            )));
        }
        rewards
            .iter()
            .enumerate()
            .map(|(i, r)| match r.as_f64() {
                Some(x) if x.is_finite() => Ok(x),
                _ => Err(problem(format!(
                    "`rewards[{i}]` = {r}, not a finite number"
                ))),
            })
            .collect()
    }
}
