//! The only code that knows the YAML library: turns text into a small tree
//! of [`Node`]s that remember where they were written, one document at a
//! time, straight from the parser's events (no intermediate tree).
mod scalar;

use std::{borrow::Cow, collections::HashMap};

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

use self::scalar::resolve_scalar;

/// A YAML value with the 1-based line and column it starts at.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub value: Value,
    pub line: usize,
    pub col: usize,
}

/// The YAML data model the config decoder works on.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order, duplicates kept (the decoder reports them).
    Map(Vec<(Node, Node)>),
}

/// Why a text could not be loaded, positioned: a syntax error, or a
/// document past one of the limits below.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub col: usize,
    /// The whole message, e.g. `invalid YAML: ...` or `document nests deeper than ...`.
    pub message: String,
}

/// Deepest nesting of sequences and mappings accepted. Istio resources nest
/// about 10 levels and the deepest Kubernetes objects (CRD schemas) a few
/// dozen; the bound keeps every recursive walk of the tree (decoding,
/// cloning, dropping) far from the stack's end.
pub(crate) const MAX_DEPTH: usize = 256;
/// Most nodes one document may hold, aliases expanded: about 60 MB of tree.
/// The largest realistic resource (a VirtualService with 10,000 routes) is
/// a few hundred thousand.
pub(crate) const MAX_DOCUMENT_NODES: usize = 1_000_000;
/// Scalar bytes aliases may copy on top of a document's own text.
const ALIAS_BYTES_ALLOWANCE: usize = 1 << 20;

/// Parses a (multi-document) YAML text, handing each document to `each` as
/// soon as it is complete, so only one document tree is alive at a time.
/// Documents before an error have been handed over when it is returned.
///
/// Events are pulled one at a time (the parser's own `load` recurses once
/// per nesting level and overflows the stack on deep block-style input), and
/// every document is held to [`MAX_DEPTH`], [`MAX_DOCUMENT_NODES`] and the
/// alias limits of [`AliasBudget`] before anything is copied.
pub(crate) fn for_each_document(text: &str, each: impl FnMut(Node)) -> Result<(), SyntaxError> {
    load(text, MAX_DOCUMENT_NODES, each)
}

/// [`for_each_document`] with the node limit as a parameter, so tests can
/// reach it without building a million nodes.
fn load(text: &str, max_nodes: usize, each: impl FnMut(Node)) -> Result<(), SyntaxError> {
    let mut builder = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        max_nodes,
        aliases: AliasBudget::new(text.len()),
        each,
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|err| SyntaxError {
            line: err.marker().line(),
            col: err.marker().col() + 1,
            message: format!("invalid YAML: {}", err.info()),
        })?;
        builder.on_event(event, span)?;
    }
    Ok(())
}

/// Parses every document of a text.
#[cfg(test)]
fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut docs = Vec::new();
    for_each_document(text, |doc| docs.push(doc))?;
    Ok(docs)
}

/// How much of a document may come from alias expansion. Node counts follow
/// the rule Kubernetes' YAML library (go-yaml v3, `allowedAliasRatio`)
/// applies: past 100 aliased nodes in a document of over 1,000, at most 99%
/// of a small document's nodes may come from aliases, falling to 10% for
/// documents of 4 million nodes. A node count alone would let one large
/// anchored string be copied thousands of times, so the scalar bytes aliases
/// copy are also bounded: at most the document's text again, plus 1 MiB.
#[derive(Debug)]
struct AliasBudget {
    aliased_nodes: usize,
    aliased_bytes: usize,
    max_bytes: usize,
}

impl AliasBudget {
    fn new(text_len: usize) -> Self {
        Self {
            aliased_nodes: 0,
            aliased_bytes: 0,
            max_bytes: text_len.saturating_add(ALIAS_BYTES_ALLOWANCE),
        }
    }

    fn reset(&mut self) {
        self.aliased_nodes = 0;
        self.aliased_bytes = 0;
    }

    /// Accounts for an alias copying `size` into a document that holds
    /// `document_nodes` nodes with the copy; the message when it is too much.
    fn spend(&mut self, size: Size, document_nodes: usize) -> Result<(), String> {
        self.aliased_nodes += size.nodes;
        self.aliased_bytes += size.bytes;
        if self.aliased_nodes > 100
            && document_nodes > 1000
            && self.aliased_nodes as f64 / document_nodes as f64
                > allowed_alias_ratio(document_nodes)
        {
            return Err(format!(
                "excessive aliasing: {} of the document's {document_nodes} nodes come from aliases (a YAML alias bomb?)",
                self.aliased_nodes
            ));
        }
        if self.aliased_bytes > self.max_bytes {
            return Err(format!(
                "excessive aliasing: aliases copy {} bytes of text, more than the {} allowed for this file (a YAML alias bomb?)",
                self.aliased_bytes, self.max_bytes
            ));
        }
        Ok(())
    }
}

/// go-yaml v3's `allowedAliasRatio`: 0.99 up to 400,000 nodes, 0.10 from
/// 4,000,000, linear in between.
fn allowed_alias_ratio(nodes: usize) -> f64 {
    const LOW: f64 = 400_000.0;
    const HIGH: f64 = 4_000_000.0;
    let nodes = nodes as f64;
    if nodes <= LOW {
        0.99
    } else if nodes >= HIGH {
        0.10
    } else {
        0.99 - 0.89 * (nodes - LOW) / (HIGH - LOW)
    }
}

/// What a subtree costs: its nodes and the bytes of its scalars.
#[derive(Clone, Copy, Debug, Default)]
struct Size {
    nodes: usize,
    bytes: usize,
}

impl Size {
    /// One node holding `bytes` of scalar text.
    fn one(bytes: usize) -> Self {
        Self { nodes: 1, bytes }
    }

    fn add(&mut self, other: Self) {
        self.nodes += other.nodes;
        self.bytes += other.bytes;
    }
}

/// A collection being built.
enum Frame {
    Seq {
        node: Node,
        anchor: usize,
        size: Size,
        /// Written `[...]`, not as a block.
        flow: bool,
    },
    Map {
        node: Node,
        anchor: usize,
        size: Size,
        key: Option<Node>,
        /// Set for the implicit one-pair mapping of a flow sequence entry.
        pair: Option<FlowPair>,
    },
}

/// An entry `[a: b]` of a flow sequence, which YAML 1.2 reads as a
/// one-pair mapping, watched for the one case Kubernetes' YAML library
/// (go-yaml, YAML 1.1) reads otherwise: a plain scalar followed by a colon
/// and straight away by `,`, `]` or `}`. There YAML 1.2 ends the scalar
/// and takes the colon as a mapping with an empty value, and go-yaml, whose
/// colon only ends a plain scalar before a space, keeps it as text. So
/// `addresses: [1.2.3.4, 001:db8::]` (in Istio's own test data) is two
/// strings for `kubectl` and here too; `[a: b]`, `[a: ]` and `["a":]` are
/// mappings for both.
#[derive(Debug, Default)]
struct FlowPair {
    /// The key as written, when plain, untagged and unanchored, and the
    /// character index it ends at (the colon's).
    plain_key: Option<(String, usize)>,
    /// The value is an empty plain scalar at the colon (nothing written).
    empty_value: bool,
}

struct Builder<F> {
    stack: Vec<Frame>,
    /// Anchored nodes by id, with their size, for aliases (`*name`).
    anchors: HashMap<usize, (Node, Size)>,
    /// Nodes in the current document so far, aliases expanded.
    nodes: usize,
    /// [`MAX_DOCUMENT_NODES`] outside tests.
    max_nodes: usize,
    aliases: AliasBudget,
    each: F,
}

impl<F: FnMut(Node)> Builder<F> {
    fn complete(&mut self, node: Node, anchor: usize, size: Size) {
        // Anchor ids start at 1; 0 means the node has none.
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => (self.each)(node),
            Some(Frame::Seq {
                node: seq,
                size: parent,
                ..
            }) => {
                parent.add(size);
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Frame::Map {
                node: map,
                key,
                size: parent,
                ..
            }) => {
                parent.add(size);
                match key.take() {
                    None => *key = Some(node),
                    Some(k) => {
                        if let Value::Map(entries) = &mut map.value {
                            entries.push((k, node));
                        }
                    }
                }
            }
        }
    }

    /// Counts `added` nodes into the document, failing past the limit.
    fn count(&mut self, added: usize) -> Result<(), String> {
        self.nodes += added;
        if self.nodes > self.max_nodes {
            return Err(format!(
                "document has more than {} nodes (aliases expanded)",
                self.max_nodes
            ));
        }
        Ok(())
    }

    /// Checks a collection opened now stays within [`MAX_DEPTH`].
    fn open(&mut self) -> Result<(), String> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(format!("document nests deeper than {MAX_DEPTH} levels"));
        }
        self.count(1)
    }

    /// Adds one parser event to the document being built, handing the
    /// document over when it is complete.
    fn on_event(&mut self, event: Event<'_>, span: Span) -> Result<(), SyntaxError> {
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                self.on_scalar(text, style, anchor, tag.as_deref(), span)
            }
            Event::SequenceStart(anchor, _) => self.on_sequence_start(anchor, span),
            Event::MappingStart(anchor, _) => self.on_mapping_start(anchor, span),
            Event::SequenceEnd | Event::MappingEnd => {
                self.on_collection_end(span);
                Ok(())
            }
            Event::Alias(id) => self.on_alias(id, span),
            Event::DocumentStart(_) => {
                self.anchors.clear();
                self.nodes = 0;
                self.aliases.reset();
                Ok(())
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => Ok(()),
        }
    }

    fn on_scalar(
        &mut self,
        text: Cow<'_, str>,
        style: ScalarStyle,
        anchor: usize,
        tag: Option<&Tag>,
        span: Span,
    ) -> Result<(), SyntaxError> {
        self.count(1).map_err(|m| error_at(span, m))?;
        if let Some(Frame::Map {
            key,
            pair: Some(pair),
            ..
        }) = self.stack.last_mut()
        {
            let plain = style == ScalarStyle::Plain && anchor == 0 && tag.is_none();
            match (key, &pair.plain_key) {
                (None, _) if plain => {
                    pair.plain_key = Some((text.to_string(), span.end.index()));
                }
                (Some(_), Some((_, colon))) => {
                    pair.empty_value = plain && text.is_empty() && span.start.index() == *colon;
                }
                _ => {}
            }
        }
        let length = text.len();
        let node = node_at(span, resolve_scalar(text, style, tag));
        self.complete(node, anchor, Size::one(length));
        Ok(())
    }

    fn on_sequence_start(&mut self, anchor: usize, span: Span) -> Result<(), SyntaxError> {
        self.open().map_err(|m| error_at(span, m))?;
        self.stack.push(Frame::Seq {
            node: node_at(span, Value::Seq(Vec::new())),
            anchor,
            size: Size::one(0),
            // A flow sequence's start spans its `[`; a block one is empty.
            flow: span.end.index() > span.start.index(),
        });
        Ok(())
    }

    fn on_mapping_start(&mut self, anchor: usize, span: Span) -> Result<(), SyntaxError> {
        self.open().map_err(|m| error_at(span, m))?;
        // Straight in a flow sequence, only the implicit one-pair
        // mapping starts with nothing written (`{` spans a character).
        let in_flow_sequence = matches!(self.stack.last(), Some(Frame::Seq { flow: true, .. }));
        let implicit = span.end.index() == span.start.index();
        self.stack.push(Frame::Map {
            node: node_at(span, Value::Map(Vec::new())),
            anchor,
            size: Size::one(0),
            key: None,
            pair: (in_flow_sequence && implicit && anchor == 0).then(FlowPair::default),
        });
        Ok(())
    }

    fn on_collection_end(&mut self, span: Span) {
        match self.stack.pop() {
            Some(Frame::Map {
                node,
                pair:
                    Some(FlowPair {
                        plain_key: Some((key, colon)),
                        empty_value: true,
                    }),
                ..
            }) if span.start.index() == colon + 1 => {
                // `[key:]`, `[key:, ...]`: go-yaml's string `key:`.
                let bytes = key.len() + 1;
                let text = Node {
                    value: Value::Str(format!("{key}:")),
                    line: node.line,
                    col: node.col,
                };
                self.complete(text, 0, Size::one(bytes));
            }
            Some(
                Frame::Seq {
                    node, anchor, size, ..
                }
                | Frame::Map {
                    node, anchor, size, ..
                },
            ) => self.complete(node, anchor, size),
            None => {}
        }
    }

    fn on_alias(&mut self, id: usize, span: Span) -> Result<(), SyntaxError> {
        // Every limit is checked before the anchored node is copied.
        let size = self
            .anchors
            .get(&id)
            .map_or(Size::one(0), |(_, size)| *size);
        self.count(size.nodes).map_err(|m| error_at(span, m))?;
        self.aliases
            .spend(size, self.nodes)
            .map_err(|m| error_at(span, m))?;
        let node = self
            .anchors
            .get(&id)
            .map_or_else(|| node_at(span, Value::Null), |(node, _)| node.clone());
        self.complete(node, 0, size);
        Ok(())
    }
}

/// A node starting where `span` does.
fn node_at(span: Span, value: Value) -> Node {
    Node {
        value,
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

/// An error at the start of `span`.
fn error_at(span: Span, message: String) -> SyntaxError {
    SyntaxError {
        line: span.start.line(),
        col: span.start.col() + 1,
        message,
    }
}

impl Node {
    /// A short name of the node's type, for "expected X, found Y" messages.
    pub(crate) fn type_name(&self) -> &'static str {
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
    pub(crate) fn get(&self, key: &str) -> Option<&Self> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node of `key` in a mapping node: where to point at a field
    /// left empty (`name:`), whose null value has no text of its own.
    pub(crate) fn key(&self, key: &str) -> Option<&Self> {
        self.entry(key).map(|(k, _)| k)
    }

    fn entry(&self, key: &str) -> Option<&(Self, Self)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The items of a one-document flow list.
    fn list_items(text: &str) -> Vec<Node> {
        let docs = parse_documents(text).unwrap();
        let Value::Seq(items) = &docs[0].value else {
            panic!("not a list: {text}")
        };
        items.clone()
    }

    /// The values of [`list_items`].
    fn list_values(text: &str) -> Vec<Value> {
        list_items(text).into_iter().map(|n| n.value).collect()
    }

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
        let values = list_values(
            "[~, null, true, False, 42, -7, 0x1f, 0o17, 1.5, .inf, \"80\", '1', yes, on, 1.2.3]",
        );
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
    fn a_colon_before_a_flow_indicator_stays_in_the_scalar_as_kubernetes_reads_it() {
        // Istio's own test data: an IPv6 address ending in `::`.
        let docs = parse_documents("addresses: [1.2.3.4, 001:db8::]\n").unwrap();
        let Value::Seq(items) = &docs[0].get("addresses").unwrap().value else {
            panic!("not a list")
        };
        assert_eq!(
            items
                .iter()
                .map(|n| (n.value.clone(), n.col))
                .collect::<Vec<_>>(),
            [
                (Value::Str("1.2.3.4".into()), 13),
                (Value::Str("001:db8::".into()), 22),
            ]
        );
        assert_eq!(
            list_values("[a:, b, 80:, c::d:]"),
            [
                Value::Str("a:".into()),
                Value::Str("b".into()),
                Value::Str("80:".into()),
                Value::Str("c::d:".into()),
            ]
        );
    }

    #[test]
    fn real_flow_pairs_and_block_entries_stay_mappings() {
        let pair = |key: &str, value: Value| {
            Value::Map(vec![(
                Node {
                    value: Value::Str(key.into()),
                    line: 0,
                    col: 0,
                },
                Node {
                    value,
                    line: 0,
                    col: 0,
                },
            )])
        };
        // Positions aside: a space or a line break after the colon, a
        // quoted key, a value, and an explicit flow mapping (whose keys go-yaml
        // would also read with the colon; not needed by any Istio field).
        let strip = |value: Value| match value {
            Value::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            Node {
                                line: 0,
                                col: 0,
                                ..k
                            },
                            Node {
                                line: 0,
                                col: 0,
                                ..v
                            },
                        )
                    })
                    .collect(),
            ),
            other => other,
        };
        let values: Vec<Value> = list_values("[a: , \"b\":, c: d, {e:}, f:\n]")
            .into_iter()
            .map(strip)
            .collect();
        assert_eq!(
            values,
            [
                pair("a", Value::Null),
                pair("b", Value::Null),
                pair("c", Value::Str("d".into())),
                pair("e", Value::Null),
                pair("f", Value::Null),
            ]
        );
        // Block context: `- 001:db8::` is a mapping for go-yaml as well.
        let docs = parse_documents("- 001:db8::\n").unwrap();
        let Value::Seq(items) = &docs[0].value else {
            panic!("not a list")
        };
        assert!(matches!(items[0].value, Value::Map(_)), "{items:?}");
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

    /// The generator: `levels` anchors, each a list of 9 aliases of the previous.
    fn alias_bomb(levels: usize) -> String {
        let mut text = String::from("a: &a [1,1,1,1,1,1,1,1,1]\n");
        let names: Vec<char> = ('a'..='z').collect();
        for level in 1..levels {
            let aliases = vec![format!("*{}", names[level - 1]); 9].join(",");
            text += &format!("{}: &{} [{aliases}]\n", names[level], names[level]);
        }
        text
    }

    #[test]
    fn alias_bomb_is_refused_at_the_alias_that_crosses_the_limit() {
        let bomb = alias_bomb(7);
        assert!(bomb.len() < 320, "{}", bomb.len());
        let err = parse_documents(&bomb).unwrap_err();
        assert!(err.message.starts_with("excessive aliasing"), "{err:?}");
        // Level d (line 4) is the first whose expansion passes 1,000 nodes.
        assert_eq!(err.line, 4, "{err:?}");
    }

    #[test]
    fn modest_alias_reuse_is_accepted() {
        // Three levels expand to 9 + 81 + 729 nodes: within 99% of 1,000+.
        let docs = parse_documents(&alias_bomb(3)).unwrap();
        let Value::Seq(c) = &docs[0].get("c").unwrap().value else {
            panic!("not a list")
        };
        assert_eq!(c.len(), 9);
    }

    /// The error for `anchored` (line 1) copied by 40 aliases (line 2).
    fn aliased_40_times(anchored: &str) -> SyntaxError {
        let aliases = vec!["*s"; 40].join(", ");
        parse_documents(&format!("s: &s {anchored}\nl: [{aliases}]\n")).unwrap_err()
    }

    #[test]
    fn one_large_string_copied_by_many_aliases_is_refused() {
        let big = "x".repeat(64 * 1024);
        let err = aliased_40_times(&big);
        assert!(err.message.contains("aliases copy"), "{err:?}");
        assert_eq!(err.line, 2, "{err:?}");
    }

    #[test]
    fn deep_block_sequences_get_a_positioned_error_not_a_stack_overflow() {
        let err = parse_documents(&format!("{}x", "- ".repeat(20_000))).unwrap_err();
        assert_eq!(
            err.message,
            format!("document nests deeper than {MAX_DEPTH} levels")
        );
        assert_eq!((err.line, err.col), (1, 2 * MAX_DEPTH + 1));
    }

    #[test]
    fn deep_block_mappings_and_flow_nesting_get_errors_too() {
        for text in [
            format!("{}x", "? ".repeat(10_000)),
            "[".repeat(20_000),
            "{a: ".repeat(20_000),
            format!("a:\n{}", "  - ".repeat(300)),
        ] {
            let Err(err) = parse_documents(&text) else {
                panic!("accepted {}", &text[..20]);
            };
            assert!(
                err.message.contains("deeper than") || err.message.contains("recursion limit"),
                "{err:?}"
            );
        }
    }

    #[test]
    fn nesting_up_to_the_limit_is_accepted() {
        let text = format!("{}x", "- ".repeat(MAX_DEPTH));
        assert_eq!(parse_documents(&text).unwrap().len(), 1);
        let text = format!("{}x", "- ".repeat(MAX_DEPTH + 1));
        assert!(parse_documents(&text).is_err());
    }

    #[test]
    fn a_large_document_cannot_pay_for_a_bomb_in_the_next() {
        // Alone, the bomb is refused; after 5,000 plain nodes in another
        // document it would pass if nodes were counted per stream.
        let plain = format!("[{}]\n", vec!["1"; 5_000].join(","));
        let text = format!("{plain}---\n{}", alias_bomb(4));
        let err = parse_documents(&text).unwrap_err();
        assert!(err.message.starts_with("excessive aliasing"), "{err:?}");
    }

    #[test]
    fn aliases_of_earlier_documents_do_not_count_against_later_ones() {
        let reuse = alias_bomb(3);
        let plain = format!("[&x 1, {}, *x]\n", vec!["1"; 1_000].join(","));
        let text = format!("{reuse}---\n{reuse}---\n{plain}");
        assert_eq!(parse_documents(&text).unwrap().len(), 3);
    }

    #[test]
    fn syntax_errors_point_at_the_offending_character() {
        let err = parse_documents("a: b: c\n").unwrap_err();
        assert_eq!((err.line, err.col), (1, 5), "{err:?}");
    }

    #[test]
    fn a_document_may_hold_exactly_the_node_limit() {
        // A list and four items: five nodes.
        let text = "[1, 2, 3, 4]\n";
        assert!(load(text, 5, |_| {}).is_ok());
        let err = load(text, 4, |_| {}).unwrap_err();
        assert_eq!(
            err.message,
            "document has more than 4 nodes (aliases expanded)"
        );
        assert_eq!((err.line, err.col), (1, 11));
        // Aliases count as the nodes they copy.
        assert!(load("[&a [1, 2], *a]\n", 7, |_| {}).is_ok());
        assert!(load("[&a [1, 2], *a]\n", 6, |_| {}).is_err());
    }

    #[test]
    fn the_alias_ratio_follows_go_yaml() {
        assert_eq!(allowed_alias_ratio(0), 0.99);
        assert_eq!(allowed_alias_ratio(400_000), 0.99);
        assert!((allowed_alias_ratio(2_200_000) - 0.545).abs() < 1e-9);
        assert!((allowed_alias_ratio(1_300_000) - 0.7675).abs() < 1e-9);
        assert_eq!(allowed_alias_ratio(4_000_000), 0.10);
        assert_eq!(allowed_alias_ratio(9_000_000), 0.10);
    }

    fn nodes(nodes: usize) -> Size {
        Size { nodes, bytes: 0 }
    }

    #[test]
    fn the_alias_budget_edges() {
        // Up to 100 aliased nodes are always fine, however small the document.
        assert!(AliasBudget::new(0).spend(nodes(50), 50).is_ok());
        // The ratio is only judged past 1,000 nodes.
        assert!(AliasBudget::new(0).spend(nodes(995), 1_000).is_ok());
        assert!(AliasBudget::new(0).spend(nodes(996), 1_001).is_err());
        // Exactly 99% is allowed; more is not.
        assert!(AliasBudget::new(0).spend(nodes(1_980), 2_000).is_ok());
        assert!(AliasBudget::new(0).spend(nodes(1_981), 2_000).is_err());
        // Many aliased nodes in a document mostly its own are fine.
        assert!(AliasBudget::new(0).spend(nodes(500), 2_000).is_ok());
        assert!(AliasBudget::new(0).spend(nodes(200), 500).is_ok());
        // Bytes: the text's size plus 1 MiB, exactly.
        let bytes = |bytes| Size { nodes: 1, bytes };
        assert!(
            AliasBudget::new(10)
                .spend(bytes((1 << 20) + 10), 10)
                .is_ok()
        );
        assert!(
            AliasBudget::new(10)
                .spend(bytes((1 << 20) + 11), 10)
                .is_err()
        );
    }

    #[test]
    fn an_anchored_list_of_large_strings_counts_every_byte() {
        let big = "x".repeat(64 * 1024);
        let err = aliased_40_times(&format!("[{big}, {big}]"));
        assert!(err.message.contains("aliases copy"), "{err:?}");
    }

    #[test]
    fn core_tags_type_quoted_scalars_and_other_tags_are_ignored() {
        let values =
            list_values("[!!int '7', !!float '1.5', !!bool 'true', !!null 'x', !str 80, !!int x]");
        assert_eq!(
            values,
            vec![
                Value::Int(7),
                Value::Float(1.5),
                Value::Bool(true),
                Value::Null,
                Value::Int(80),
                Value::Str("x".into()),
            ]
        );
    }

    #[test]
    fn floats_follow_the_core_schema() {
        let items = list_items("[.5, .nan, -.inf, 1e3, e5, inf, +5, 1_0, -+5, 1.5x]");
        assert_eq!(items[0].value, Value::Float(0.5));
        assert!(matches!(items[1].value, Value::Float(f) if f.is_nan()));
        assert_eq!(items[2].value, Value::Float(f64::NEG_INFINITY));
        assert_eq!(items[3].value, Value::Float(1000.0));
        assert_eq!(items[4].value, Value::Str("e5".into()));
        assert_eq!(items[5].value, Value::Str("inf".into()));
        assert_eq!(items[6].value, Value::Int(5));
        for (item, text) in items[7..].iter().zip(["1_0", "-+5", "1.5x"]) {
            assert_eq!(item.value, Value::Str(text.into()));
        }
    }

    #[test]
    fn type_names_read_well_in_messages() {
        let items = list_items("[~, true, 1, 1.5, a, [], {}]");
        let names: Vec<&str> = items.iter().map(Node::type_name).collect();
        assert_eq!(
            names,
            [
                "null",
                "a boolean",
                "an integer",
                "a number",
                "a string",
                "a list",
                "a mapping"
            ]
        );
    }
}
