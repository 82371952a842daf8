//! The server's request bodies (the proxy's chat completions among them) and WebSocket
//! frames: every body is either a validated
//! request or a 4xx error naming what is wrong; nothing panics. The reward bodies include
//! OpenRLHF's texts, whose ChatML splitting is also fuzzed directly (two texts separated by
//! a NUL byte): it either fails with a reason or gives a prompt that ends with the user.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qwen3guard::Role;
use qwen3guard_server::reward::chatml;
use qwen3guard_server::validation;

fuzz_target!(|data: &[u8]| {
    let checks = [
        validation::guard(data).err(),
        validation::moderation(data, 8).err(),
        validation::open(data).err(),
        validation::append(data).err(),
        validation::reward(data, 8, false).err(),
        validation::reward(data, 8, true).err(),
        validation::get_reward(data, 8).err(),
        qwen3guard_server::proxy::chat::chat_request(data).err(),
    ];
    for error in checks.into_iter().flatten() {
        let (status, _, _) = error.status();
        assert!(status.is_client_error(), "{status} for {error}");
        assert!(!error.to_string().is_empty());
    }
    // A WebSocket frame: an object whose fields, less `op`, `seq` and `id`, are a body.
    if let Ok(mut map) = validation::object(data) {
        for key in ["op", "seq", "id"] {
            map.remove(key);
        }
        let _ = validation::open_fields(&map);
        let _ = validation::append_fields(&map);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let (query, prompt) = text.split_once('\0').unwrap_or((text, ""));
        if let Ok(rollout) = chatml::split(query, prompt) {
            let last = rollout.prompt.messages().last().map(|m| m.role);
            assert_eq!(last, Some(Role::User));
        }
    }
});
