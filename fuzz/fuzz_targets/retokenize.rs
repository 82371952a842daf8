//! Incremental re-tokenization of streamed text: whatever the cuts (inside characters
//! too), the ids fed are those of tokenizing the whole text at once.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qwen3guard::prompt::PromptTokenizer;
use qwen3guard_server::retokenize::Retokenizer;

fn tokenizer() -> &'static PromptTokenizer {
    static TOKENIZER: OnceLock<PromptTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crates/qwen3guard/tests/fixtures/stream/tokenizer.json"
        );
        PromptTokenizer::from_file(path.as_ref()).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    // The first bytes choose the cut lengths, the rest is the text.
    let (cuts, text) = data.split_at(data.len().min(8));
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let tokenizer = tokenizer();
    let whole = tokenizer.encode_text(text).unwrap();
    let mut retokenizer = Retokenizer::default();
    let mut fed = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut k = 0;
    while start < bytes.len() {
        let len = 1 + usize::from(cuts.get(k % cuts.len().max(1)).copied().unwrap_or(3) % 9);
        let end = (start + len).min(bytes.len());
        fed.extend(
            retokenizer
                .push(tokenizer, &bytes[start..end], false)
                .unwrap(),
        );
        start = end;
        k += 1;
    }
    fed.extend(retokenizer.push(tokenizer, &[], true).unwrap());
    assert_eq!(fed, whole, "{text:?}");
});
