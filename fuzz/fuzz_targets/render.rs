//! Rendering and safe tokenization of arbitrary conversations.
//!
//! Invariants: no panic; the rendered ids hold exactly as many control tokens as the same
//! conversation with plain contents (message text can never add or remove one); the ids
//! decode without error, and the judged messages' ASCII contents come back from them.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qwen3guard::prompt::{Prompter, RenderOptions};
use qwen3guard::{Checkpoint, Conversation, Message, Role};

/// Ids from here up are the tokenizer's added (control) tokens in the Qwen3 vocabulary.
const FIRST_ADDED_ID: u32 = 151_643;

fn prompter() -> &'static Prompter {
    static PROMPTER: OnceLock<Prompter> = OnceLock::new();
    PROMPTER.get_or_init(|| {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crates/qwen3guard/tests/fixtures/gen-tied"
        );
        Checkpoint::open(dir.as_ref()).unwrap().prompter().unwrap()
    })
}

/// Messages from bytes: each 0x00-separated part is one message, its first byte the role.
fn messages(data: &[u8]) -> Vec<Message> {
    data.split(|&b| b == 0)
        .filter(|part| !part.is_empty())
        .take(16)
        .map(|part| {
            let role = match part[0] % 3 {
                0 => Role::System,
                1 => Role::User,
                _ => Role::Assistant,
            };
            Message::new(role, String::from_utf8_lossy(&part[1..]).into_owned())
        })
        .collect()
}

fn controls(ids: &[u32]) -> usize {
    ids.iter().filter(|&&id| id >= FIRST_ADDED_ID).count()
}

fuzz_target!(|data: &[u8]| {
    let messages = messages(data);
    let plain: Vec<Message> = messages.iter().map(|m| Message::new(m.role, "x")).collect();
    let (Ok(conversation), Ok(reference)) = (
        Conversation::new(messages.clone()),
        Conversation::new(plain),
    ) else {
        return;
    };
    let prompter = prompter();
    for options in [
        RenderOptions::default(),
        RenderOptions {
            add_generation_prompt: false,
            enable_thinking: Some(false),
        },
    ] {
        let rendered = prompter.render(&conversation, options).unwrap();
        let expected = prompter.render(&reference, options).unwrap();
        assert_eq!(controls(&rendered.token_ids), controls(&expected.token_ids));
        let decoded = prompter
            .tokenizer()
            .decode(&rendered.token_ids, false)
            .unwrap();
        let decoded = prompter.tokenizer().unescape(&decoded);
        // The Gen template shows the judged exchange only (the last message, and the
        // last user message before an assistant's), so those must come back.
        let last_user = messages.iter().rev().find(|m| m.role == Role::User);
        for m in messages.last().into_iter().chain(last_user) {
            if m.content.is_ascii() && !m.content.trim().is_empty() {
                assert!(
                    decoded.contains(m.content.trim()),
                    "{:?} not in {decoded:?}",
                    m.content
                );
            }
        }
    }
});
