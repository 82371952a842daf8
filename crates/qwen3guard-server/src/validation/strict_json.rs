//! JSON bodies parsed into values with every object key unique.
//!
//! `serde_json::Value` keeps the last of two equal keys. The CLI reads messages through
//! typed structs, which refuse a duplicated field, and so does any strict parser in front
//! of the guard; a body read one way by a proxy and another way here is a parser
//! differential (`{"role": "assistant", "role": "user"}` judged as a user prompt here
//! while a first-key reader sees an answer). So a duplicated key, at any depth, is an
//! error that names it. Depth stays bounded by serde_json's own recursion limit, which
//! counts the nesting this visitor descends through.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses `bytes` as one JSON value, refusing duplicated object keys.
pub(crate) fn parse(bytes: &[u8]) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = UniqueKeys.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// A seed (and visitor) building a `Value` whose objects never held a key twice.
#[derive(Clone, Copy)]
struct UniqueKeys;

impl<'de> DeserializeSeed<'de> for UniqueKeys {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        // serde_json refuses numbers out of range before here; kept total anyway.
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("the number {v} is not finite")))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(A::Error::custom(format!(
                    "the key `{key}` appears twice in one object"
                )));
            }
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicated_key_is_refused_at_any_depth() {
        for body in [
            r#"{"a": 1, "a": 2}"#,
            r#"{"messages": [{"role": "assistant", "role": "user", "content": "x"}]}"#,
            r#"[[{"x": {"y": 1, "y": 1}}]]"#,
        ] {
            let e = parse(body.as_bytes()).unwrap_err().to_string();
            assert!(e.contains("appears twice"), "{body}: {e}");
        }
    }

    #[test]
    fn values_equal_serde_json_s_own_reading() {
        for body in [
            r#"{"messages": [{"role": "user", "content": "h\u00e9\ud83d\ude00"}], "n": -3, "f": 1.5e3, "b": true, "z": null}"#,
            "[]",
            r#"  "text"  "#,
            "18446744073709551615",
            r#"{"a": {"a": {"a": []}}}"#,
        ] {
            let ours = parse(body.as_bytes()).unwrap();
            let theirs: Value = serde_json::from_str(body).unwrap();
            assert_eq!(ours, theirs, "{body}");
        }
    }

    #[test]
    fn broken_json_still_fails_as_serde_json_does() {
        for body in ["", "{", r#"{"a": 1} x"#, "1e999999", r#""\ud800 x""#] {
            assert!(parse(body.as_bytes()).is_err(), "{body}");
            assert!(serde_json::from_str::<Value>(body).is_err(), "{body}");
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = parse(deep.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("recursion limit"), "{e}");
    }
}
