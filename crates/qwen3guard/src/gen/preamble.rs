//! The cached preamble of Gen's moderation prompt.
//!
//! Every Gen prompt starts with the same few hundred tokens (task, policy, categories;
//! one text for prompts, one for responses). Their keys and values are computed once per
//! model and task, and each request starts from a fork of that cache (sharing its pages
//! until it writes to one). Reuse is decided per request by
//! the longest common prefix of token ids, so it is exact whatever the template: a
//! position's keys and values depend only on the tokens up to it.

use crate::error::Result;
use crate::model::{Backbone, KvCache};
use crate::prompt::{Conversation, Message, Prompter, RenderOptions, Role, Task};

/// Token ids shared by every prompt of one task, and their cache.
pub struct Preamble {
    ids: Vec<u32>,
    cache: KvCache,
}

impl Preamble {
    /// Renders two probe conversations of `task` that differ only in content; their common
    /// token prefix is the preamble.
    pub fn compute(backbone: &Backbone, prompter: &Prompter, task: Task) -> Result<Self> {
        let probe = |text: &str| -> Result<Vec<u32>> {
            let mut messages = vec![Message::new(Role::User, text)];
            if task == Task::Response {
                messages.push(Message::new(Role::Assistant, text));
            }
            let conversation = Conversation::new(messages)?;
            Ok(prompter
                .render(&conversation, RenderOptions::default())?
                .token_ids)
        };
        let (a, b) = (probe("a")?, probe("b")?);
        let len = common_prefix(&a, &b);
        let mut cache = backbone.new_cache();
        if len > 0 {
            // Only the keys and values are kept: no position's output is needed.
            backbone.forward_last(&a[..len], &mut cache, 0)?;
        }
        Ok(Preamble {
            ids: a[..len].to_vec(),
            cache,
        })
    }

    /// A cache holding the longest cached prefix of `ids` (always leaving at least one
    /// token to run, whose logits the caller needs), and that prefix's length.
    pub fn start(&self, ids: &[u32]) -> Result<(KvCache, usize)> {
        let reuse = common_prefix(&self.ids, ids).min(ids.len().saturating_sub(1));
        let mut cache = self.cache.fork();
        cache.truncate(reuse);
        Ok((cache, reuse))
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
