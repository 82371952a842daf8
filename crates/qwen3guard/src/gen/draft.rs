//! Format-guided drafting for Gen's output.
//!
//! Gen's answer is almost all fixed text: `Safety: <label>\nCategories: <names>` and, for
//! responses, `\nRefusal: <Yes|No>`, then `<|im_end|>`. A trie of every well-formed answer
//! (one category each) tells, after the tokens generated so far, which tokens must come
//! next if the answer stays well-formed. Those are proposed and checked in one forward
//! pass; only tokens the model's own greedy choice agrees with are kept, so the result is
//! exactly greedy decoding with fewer sequential steps.

use std::collections::HashMap;

use crate::error::Result;
use crate::policy::CATEGORIES;
use crate::prompt::{PromptTokenizer, Task};

/// A node of the trie: children by token id.
#[derive(Debug, Default, Clone)]
struct Node {
    children: HashMap<u32, usize>,
}

/// Every well-formed answer for one task, as a token trie.
#[derive(Debug, Clone)]
pub struct FormatTrie {
    nodes: Vec<Node>,
}

/// A position in the trie; `None` once the output left every well-formed answer.
pub type Cursor = Option<usize>;

impl FormatTrie {
    /// The trie of answers to `task`, ending with `stop`.
    pub fn new(tokenizer: &PromptTokenizer, task: Task, stop: u32) -> Result<Self> {
        let categories: Vec<&str> = match task {
            Task::Prompt => CATEGORIES.to_vec(),
            Task::Response => CATEGORIES
                .iter()
                .copied()
                .filter(|c| *c != "Jailbreak")
                .collect(),
        };
        let refusals: &[&str] = match task {
            Task::Prompt => &[""],
            Task::Response => &["\nRefusal: Yes", "\nRefusal: No"],
        };
        let mut sequences = Vec::new();
        for label in ["Safe", "Unsafe", "Controversial"] {
            for category in std::iter::once("None").chain(categories.iter().copied()) {
                for refusal in refusals {
                    let text = format!("Safety: {label}\nCategories: {category}{refusal}");
                    let mut ids = tokenizer.encode_text(&text)?;
                    ids.push(stop);
                    sequences.push(ids);
                }
            }
        }
        Ok(Self::from_sequences(&sequences))
    }

    /// A trie of exactly these sequences (for tests and custom formats).
    pub fn from_sequences(sequences: &[Vec<u32>]) -> Self {
        let mut trie = FormatTrie {
            nodes: vec![Node::default()],
        };
        for ids in sequences {
            trie.insert(ids);
        }
        trie
    }

    fn insert(&mut self, ids: &[u32]) {
        let mut node = 0;
        for &id in ids {
            node = match self.nodes[node].children.get(&id) {
                Some(&next) => next,
                None => {
                    self.nodes.push(Node::default());
                    let next = self.nodes.len() - 1;
                    self.nodes[node].children.insert(id, next);
                    next
                }
            };
        }
    }

    /// The cursor before anything is generated.
    pub fn root(&self) -> Cursor {
        Some(0)
    }

    /// The cursor after `id`.
    pub fn advance(&self, cursor: Cursor, id: u32) -> Cursor {
        cursor.and_then(|n| self.nodes[n].children.get(&id).copied())
    }

    /// The tokens forced from `cursor` on: followed while exactly one continuation exists.
    pub fn draft(&self, cursor: Cursor, limit: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let mut node = cursor;
        while let Some(n) = node {
            let children = &self.nodes[n].children;
            if out.len() >= limit || children.len() != 1 {
                break;
            }
            let Some((&id, &next)) = children.iter().next() else {
                break;
            };
            out.push(id);
            node = Some(next);
        }
        out
    }
}
