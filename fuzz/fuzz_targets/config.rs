//! `config.json` parsing: a config or an error, never a panic; a parsed config's tensor
//! list is computable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qwen3guard::checkpoint::ModelConfig;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(config) = ModelConfig::from_json(&text, "fuzz/config.json".as_ref()) {
        let _ = config.tensor_shapes();
    }
});
