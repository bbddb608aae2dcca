//! Typing a plain scalar by YAML 1.2's core schema (`null`, booleans,
//! integers, floats, else a string), as Kubernetes' reader does for the
//! values Istio resources hold.
use std::borrow::Cow;

use saphyr_parser::{ScalarStyle, Tag};

use super::Value;

/// YAML 1.2 core schema resolution of a scalar; quoted and block scalars
/// are strings, and `!!str` / `!!int` / `!!bool` / `!!null` tags are honoured.
/// Takes the parser's text (moved, not copied, when it owns it: one
/// allocation less per string of a large configuration).
pub(super) fn resolve_scalar(text: Cow<'_, str>, style: ScalarStyle, tag: Option<&Tag>) -> Value {
    if let Some(tag) = tag.filter(|t| t.handle == "tag:yaml.org,2002:" || t.handle == "!!") {
        let typed = match tag.suffix.as_str() {
            "str" => Some(Value::Str(text.to_string())),
            "int" => parse_int(&text).map(Value::Int),
            "float" => parse_float(&text).map(Value::Float),
            "bool" => parse_bool(&text).map(Value::Bool),
            "null" => Some(Value::Null),
            _ => None,
        };
        if let Some(value) = typed {
            return value;
        }
    }
    if style != ScalarStyle::Plain {
        return Value::Str(text.into_owned());
    }
    if matches!(&*text, "" | "~" | "null" | "Null" | "NULL") {
        return Value::Null;
    }
    if let Some(b) = parse_bool(&text) {
        return Value::Bool(b);
    }
    if let Some(i) = parse_int(&text) {
        return Value::Int(i);
    }
    if let Some(f) = parse_float(&text) {
        return Value::Float(f);
    }
    Value::Str(text.into_owned())
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn parse_int(text: &str) -> Option<i64> {
    if let Some(octal) = text.strip_prefix("0o") {
        return i64::from_str_radix(octal, 8).ok();
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok();
    }
    // Rust's parser takes exactly the core schema's `[-+]?[0-9]+`.
    text.parse().ok()
}

fn parse_float(text: &str) -> Option<f64> {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    match unsigned {
        ".inf" | ".Inf" | ".INF" => {
            return Some(if text.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            });
        }
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    // Rust's parser takes the core schema's digits, fraction and exponent,
    // and also "inf", "infinity" and "nan" spelled any way, which YAML reads
    // as strings: a core-schema float starts with a digit or a dot, none of those do.
    let numeric = unsigned
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.');
    if numeric { text.parse().ok() } else { None }
}
