//! The only code that knows the YAML library: turns text into a small tree
//! of [`Node`]s that remember where they were written, one document at a
//! time, straight from the parser's events (no intermediate tree).
use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, SpannedEventReceiver, Tag};

/// A YAML value with the 1-based line and column it starts at.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub line: usize,
    pub col: usize,
}

/// The YAML data model the config decoder works on.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order, duplicates kept (the decoder reports them).
    Map(Vec<(Node, Node)>),
}

/// A YAML syntax error, positioned.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntaxError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Parses a (multi-document) YAML text, handing each document to `each` as
/// soon as it is complete, so only one document tree is alive at a time.
/// Documents before a syntax error have been handed over when it is returned.
pub fn for_each_document(text: &str, each: impl FnMut(Node)) -> Result<(), SyntaxError> {
    let mut builder = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        each,
    };
    Parser::new_from_str(text)
        .load(&mut builder, true)
        .map_err(|err| SyntaxError {
            line: err.marker().line(),
            col: err.marker().col() + 1,
            message: err.info().to_string(),
        })
}

/// Parses every document of a text.
#[cfg(test)]
fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut docs = Vec::new();
    for_each_document(text, |doc| docs.push(doc))?;
    Ok(docs)
}

/// A collection being built.
enum Frame {
    Seq {
        node: Node,
        anchor: usize,
    },
    Map {
        node: Node,
        anchor: usize,
        key: Option<Node>,
    },
}

struct Builder<F> {
    stack: Vec<Frame>,
    /// Anchored nodes by id, for aliases (`*name`).
    anchors: HashMap<usize, Node>,
    each: F,
}

impl<F: FnMut(Node)> Builder<F> {
    fn complete(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => (self.each)(node),
            Some(Frame::Seq { node: seq, .. }) => {
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Frame::Map { node: map, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    if let Value::Map(entries) = &mut map.value {
                        entries.push((k, node));
                    }
                }
            },
        }
    }
}

impl<'input, F: FnMut(Node)> SpannedEventReceiver<'input> for Builder<F> {
    fn on_event(&mut self, event: Event<'input>, span: Span) {
        let at = |value| Node {
            value,
            line: span.start.line(),
            col: span.start.col() + 1,
        };
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let node = at(resolve_scalar(&text, style, tag.as_deref()));
                self.complete(node, anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                node: at(Value::Seq(Vec::new())),
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                node: at(Value::Map(Vec::new())),
                anchor,
                key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(Frame::Seq { node, anchor } | Frame::Map { node, anchor, .. }) =
                    self.stack.pop()
                {
                    self.complete(node, anchor);
                }
            }
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| at(Value::Null));
                self.complete(node, 0);
            }
            Event::DocumentStart(_) => self.anchors.clear(),
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
}

/// YAML 1.2 core schema resolution of a scalar; quoted and block scalars
/// are strings, and `!!str` / `!!int` / `!!bool` / `!!null` tags are honoured.
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Value {
    if let Some(tag) = tag.filter(|t| t.handle == "tag:yaml.org,2002:" || t.handle == "!!") {
        let typed = match tag.suffix.as_str() {
            "str" => Some(Value::Str(text.to_string())),
            "int" => parse_int(text).map(Value::Int),
            "float" => parse_float(text).map(Value::Float),
            "bool" => parse_bool(text).map(Value::Bool),
            "null" => Some(Value::Null),
            _ => None,
        };
        if let Some(value) = typed {
            return value;
        }
    }
    if style != ScalarStyle::Plain {
        return Value::Str(text.to_string());
    }
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Value::Null;
    }
    if let Some(b) = parse_bool(text) {
        return Value::Bool(b);
    }
    if let Some(i) = parse_int(text) {
        return Value::Int(i);
    }
    if let Some(f) = parse_float(text) {
        return Value::Float(f);
    }
    Value::Str(text.to_string())
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
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
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
    // Core schema: digits, optional fraction, optional exponent; Rust's
    // parser also takes "inf" and "nan", which YAML treats as strings.
    let numeric = unsigned
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && unsigned
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if numeric { text.parse().ok() } else { None }
}

impl Node {
    /// A short name of the node's type, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The value of `key` in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let docs = parse_documents("a:\n  b: 7\n").unwrap();
        let b = docs[0].get("a").unwrap().get("b").unwrap();
        assert_eq!((b.value.clone(), b.line, b.col), (Value::Int(7), 2, 6));
    }

    #[test]
    fn multi_document_streams_yield_every_document() {
        let docs = parse_documents("a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].get("b").unwrap().line, 3);
    }

    #[test]
    fn syntax_errors_are_positioned() {
        let err = parse_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.line >= 1, "{err:?}");
        assert!(!err.message.is_empty());
    }

    #[test]
    fn scalars_resolve_with_the_core_schema() {
        let docs = parse_documents(
            "[~, null, true, False, 42, -7, 0x1f, 0o17, 1.5, .inf, \"80\", '1', yes, on, 1.2.3]",
        )
        .unwrap();
        let Value::Seq(items) = &docs[0].value else {
            panic!("not a list")
        };
        let values: Vec<Value> = items.iter().map(|n| n.value.clone()).collect();
        assert_eq!(
            values,
            vec![
                Value::Null,
                Value::Null,
                Value::Bool(true),
                Value::Bool(false),
                Value::Int(42),
                Value::Int(-7),
                Value::Int(31),
                Value::Int(15),
                Value::Float(1.5),
                Value::Float(f64::INFINITY),
                Value::Str("80".into()),
                Value::Str("1".into()),
                Value::Str("yes".into()),
                Value::Str("on".into()),
                Value::Str("1.2.3".into()),
            ]
        );
    }

    #[test]
    fn str_tag_keeps_a_number_as_text() {
        let docs = parse_documents("a: !!str 80\n").unwrap();
        assert_eq!(docs[0].get("a").unwrap().value, Value::Str("80".into()));
    }

    #[test]
    fn aliases_repeat_the_anchored_node() {
        let docs = parse_documents("a: &x {b: 1}\nc: *x\n").unwrap();
        assert_eq!(
            docs[0].get("c").unwrap().get("b").unwrap().value,
            Value::Int(1)
        );
    }

    #[test]
    fn duplicate_keys_are_kept_for_the_decoder_to_report() {
        let docs = parse_documents("a: 1\na: 2\n").unwrap();
        let Value::Map(entries) = &docs[0].value else {
            panic!("not a map")
        };
        assert_eq!(entries.len(), 2);
    }
}
