//! The server's request bodies and WebSocket frames: every body is either a validated
//! request or a 4xx error naming what is wrong; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qwen3guard_server::validation;

fuzz_target!(|data: &[u8]| {
    let checks = [
        validation::guard(data).err(),
        validation::moderation(data).err(),
        validation::open(data).err(),
        validation::append(data).err(),
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
});
