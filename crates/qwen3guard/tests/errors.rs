//! Bad input gets a typed error that names what is wrong, never a panic.

mod common;

use std::collections::HashMap;

use common::{fixture, Scratch};
use qwen3guard::{
    Checkpoint, Conversation, Error, GenGuard, GenOptions, Message, Role, StreamGuard,
};

fn gen_error(dir: &std::path::Path) -> Error {
    match Checkpoint::open(dir).and_then(|c| GenGuard::load(&c, &Default::default())) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e,
    }
}

fn stream_error(dir: &std::path::Path) -> Error {
    match Checkpoint::open(dir).and_then(|c| StreamGuard::load(&c, &Default::default())) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e,
    }
}

/// Rewrites `model.safetensors` in `dir` through `edit` (name -> (shape, bf16 bytes)).
fn rewrite_weights(
    dir: &std::path::Path,
    edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<u8>)>),
) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<String, (Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, (view.shape().to_vec(), view.data().to_vec())))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, (shape, data))| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, shape.clone(), data)
                    .unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

#[test]
fn missing_directory_and_config_are_named() {
    let err = Checkpoint::resolve("/nonexistent/qwen3guard-model", false).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/qwen3guard-model"),
        "{err}"
    );
    let empty = Scratch::new("empty");
    let err = Checkpoint::open(&empty.0).unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn missing_weights_file_is_named() {
    let dir = Scratch::copy_of("gen-tied");
    std::fs::remove_file(dir.path("model.safetensors")).unwrap();
    let err = gen_error(&dir.0);
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn truncated_safetensors_is_reported_with_its_path() {
    let dir = Scratch::copy_of("gen-tied");
    let path = dir.path("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = gen_error(&dir.0);
    assert!(matches!(err, Error::Safetensors { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn corrupt_safetensors_header_is_reported() {
    let dir = Scratch::copy_of("gen-tied");
    let path = dir.path("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..40].copy_from_slice(&[b'#'; 32]);
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(gen_error(&dir.0), Error::Safetensors { .. }));
    std::fs::write(&path, b"tiny").unwrap();
    assert!(matches!(gen_error(&dir.0), Error::Safetensors { .. }));
}

#[test]
fn missing_shard_is_named() {
    let dir = Scratch::copy_of("gen-sharded");
    std::fs::remove_file(dir.path("model-00002-of-00002.safetensors")).unwrap();
    let err = gen_error(&dir.0);
    assert!(
        err.to_string().contains("model-00002-of-00002.safetensors"),
        "{err}"
    );
}

#[test]
fn unknown_architecture_is_refused() {
    let dir = Scratch::copy_of("gen-tied");
    let path = dir.path("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("Qwen3ForCausalLM", "LlamaForCausalLM")).unwrap();
    let err = gen_error(&dir.0);
    assert!(
        matches!(err, Error::UnknownArchitecture(ref a) if a == "LlamaForCausalLM"),
        "{err}"
    );
}

#[test]
fn malformed_config_is_reported_with_its_path() {
    let dir = Scratch::copy_of("gen-tied");
    std::fs::write(dir.path("config.json"), "{\"architectures\": [").unwrap();
    let err = gen_error(&dir.0);
    assert!(matches!(err, Error::Json { .. }), "{err}");
    assert!(err.to_string().contains("config.json"));
}

#[test]
fn scaled_rope_is_refused_not_ignored() {
    let dir = Scratch::copy_of("gen-sharded");
    let path = dir.path("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("\"rope_type\": \"default\"", "\"rope_type\": \"yarn\""),
    )
    .unwrap();
    let err = gen_error(&dir.0);
    assert!(err.to_string().contains("yarn"), "{err}");
}

#[test]
fn wrong_variant_is_refused() {
    let err = stream_error(&fixture("gen-tied"));
    assert!(matches!(err, Error::WrongVariant { .. }), "{err}");
    let err = gen_error(&fixture("stream"));
    assert!(matches!(err, Error::WrongVariant { .. }), "{err}");
}

#[test]
fn missing_head_weight_is_named() {
    let dir = Scratch::copy_of("stream");
    rewrite_weights(&dir.0, |t| {
        t.remove("query_category_head.weight");
    });
    let err = stream_error(&dir.0);
    assert!(
        matches!(err, Error::MissingTensor { ref name, .. } if name == "query_category_head.weight"),
        "{err}"
    );
}

#[test]
fn misshaped_head_weight_is_named() {
    let dir = Scratch::copy_of("stream");
    rewrite_weights(&dir.0, |t| {
        let (shape, data) = t.get_mut("risk_level_head.weight").unwrap();
        // Drop one output row: [3, inner] -> [2, inner].
        let row = data.len() / shape[0];
        data.truncate(data.len() - row);
        shape[0] -= 1;
    });
    let err = stream_error(&dir.0);
    match err {
        Error::TensorShape {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "risk_level_head.weight");
            assert_eq!(expected[0], 3);
            assert_eq!(found[0], 2);
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn missing_label_map_is_named() {
    let dir = Scratch::copy_of("stream");
    let path = dir.path("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove("query_category_map");
    std::fs::write(&path, config.to_string()).unwrap();
    let err = stream_error(&dir.0);
    assert!(err.to_string().contains("query_category_map"), "{err}");
}

#[test]
fn malformed_messages_files_are_reported() {
    let dir = Scratch::new("messages");
    let write = |name: &str, text: &str| {
        let path = dir.path(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let err = Conversation::from_json_file(&write("bad.json", "[{\"role\": \"user\"")).unwrap_err();
    assert!(
        matches!(err, Error::Json { .. }) && err.to_string().contains("bad.json"),
        "{err}"
    );
    let err =
        Conversation::from_json_file(&write("role.json", r#"[{"role": "tool", "content": "x"}]"#))
            .unwrap_err();
    assert!(err.to_string().contains("tool"), "{err}");
    let err = Conversation::from_json_file(&write("empty.json", "[]")).unwrap_err();
    assert!(matches!(err, Error::Conversation(_)), "{err}");
    let err = Conversation::from_json_file(&write(
        "system.json",
        r#"[{"role": "user", "content": "x"}, {"role": "system", "content": "y"}]"#,
    ))
    .unwrap_err();
    assert!(err.to_string().contains("system"), "{err}");
    let err =
        Conversation::from_json_file(&write("missing.json", r#"[{"role": "user"}]"#)).unwrap_err();
    assert!(err.to_string().contains("content"), "{err}");
    let err = Conversation::from_json_file(&dir.path("absent.json")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
}

#[test]
fn a_last_message_from_the_system_is_refused() {
    let err = Conversation::new(vec![Message::new(Role::System, "be nice")]).unwrap_err();
    assert!(err.to_string().contains("last message"), "{err}");
}

#[test]
fn input_longer_than_the_context_is_refused() {
    // The fixtures' context is 1024 tokens.
    let long = "word ".repeat(1500);
    let gen = GenGuard::load(
        &Checkpoint::open(&fixture("gen-tied")).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let err = gen
        .moderate(
            &Conversation::from_prompt(&long, None),
            &GenOptions::default(),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::ContextTooLong { max: 1024, .. }),
        "{err}"
    );

    let stream = StreamGuard::load(
        &Checkpoint::open(&fixture("stream")).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let err = stream
        .moderate(&Conversation::from_prompt("hi", Some(&long)), 16)
        .unwrap_err();
    assert!(
        matches!(err, Error::ContextTooLong { max: 1024, .. }),
        "{err}"
    );
    let err = stream
        .open(&Conversation::from_prompt(&long, None))
        .unwrap_err();
    assert!(matches!(err, Error::ContextTooLong { .. }), "{err}");
}

/// A session that hits the context limit reports it and stays usable.
#[test]
fn a_failed_append_leaves_the_session_unchanged() {
    let stream = StreamGuard::load(
        &Checkpoint::open(&fixture("stream")).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let mut session = stream.open(&Conversation::from_prompt("hi", None)).unwrap();
    let before = session.position();
    let too_many = vec![42u32; 2000];
    assert!(matches!(
        session.append(&too_many),
        Err(Error::ContextTooLong { .. })
    ));
    assert_eq!(session.position(), before);
    assert!(
        session.append(&[151_936 + 5]).is_err(),
        "out-of-vocabulary id accepted"
    );
    assert_eq!(session.position(), before);
    assert_eq!(session.append(&[42, 43]).unwrap().len(), 2);
    assert_eq!(session.position(), before + 2);
}

/// Stream's embedding rows are read from the checkpoint file as they are needed; a file
/// truncated under a loaded model must give an error naming it, not a crash.
#[test]
fn a_checkpoint_truncated_after_loading_is_an_error_naming_it() {
    let dir = Scratch::copy_of("stream");
    let stream =
        StreamGuard::load(&Checkpoint::open(&dir.0).unwrap(), &Default::default()).unwrap();
    let conv = Conversation::from_prompt("hi", None);
    assert!(stream.open(&conv).is_ok());
    let weights = dir.path("model.safetensors");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_len(1024)
        .unwrap();
    match stream.open(&conv) {
        Err(Error::Io { path, .. }) => assert_eq!(path, weights),
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("a session opened on a truncated checkpoint"),
    }
}

#[test]
fn opening_a_stream_on_a_response_is_refused() {
    let stream = StreamGuard::load(
        &Checkpoint::open(&fixture("stream")).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let err = stream
        .open(&Conversation::from_prompt("hi", Some("hello")))
        .unwrap_err();
    assert!(matches!(err, Error::Conversation(_)), "{err}");
}

/// Regression (fuzz target `render`, crash-fdba9746): an assistant message with no user
/// message was accepted, and the Gen template rendered an empty conversation, so the
/// message would have been judged without being read. It is refused now, whatever
/// precedes it.
#[test]
fn a_conversation_without_a_user_message_is_refused() {
    for messages in [
        vec![Message::new(Role::Assistant, "Here is how to do it.")],
        vec![
            Message::new(Role::System, "You are helpful."),
            Message::new(Role::Assistant, "Here is how to do it."),
        ],
    ] {
        let err = Conversation::new(messages).unwrap_err();
        assert!(matches!(err, Error::Conversation(_)), "{err}");
        assert!(err.to_string().contains("no user message"), "{err}");
    }
}
