//! The parser of Gen's written verdict: no panic; only known categories, each once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qwen3guard::policy::{parse_gen_output, CATEGORIES};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = parse_gen_output(&text);
    for (i, category) in parsed.categories.iter().enumerate() {
        assert!(CATEGORIES.contains(&category.as_str()), "{category:?}");
        assert!(
            !parsed.categories[..i].contains(category),
            "{category:?} twice"
        );
    }
});
