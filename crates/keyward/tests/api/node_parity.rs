//! The "as sent" message (SPEC §2) is what Node computes: `JSON.stringify(o)` of the parsed
//! body without its top-level `signature`. Generated bodies (escapes, control characters,
//! astral characters, every number form, nesting) are run through both, and must agree byte
//! for byte.
//!
//! The one known divergence, decided and documented in docs/decisions.md: JavaScript puts
//! member names that are array indices ("0", "42") first, in numeric order, whatever order
//! they were sent in; keyward keeps the order received. The generator leaves such names out;
//! a test below pins the divergence itself.

use crate::docs::available;
use keyward_core::signature::{MessageForm, SignedBody};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use std::io::Write;
use std::process::{Command, Stdio};

/// A JSON string literal of `text`, each character written raw or as a `\u` escape at random
/// (when raw is allowed).
fn string_literal() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-zA-Z0-9 _.-]{1,6}",
        1 => Just("\"".to_owned()),
        1 => Just("\\".to_owned()),
        1 => Just("/".to_owned()),
        1 => "[\u{0}-\u{1f}]",
        1 => "[é漢字Ω]",
        1 => Just("😀".to_owned()),
        1 => Just("\u{2028}\u{2029}".to_owned()),
        1 => Just("\u{7f}".to_owned()),
    ];
    (proptest::collection::vec((piece, any::<bool>()), 0..6)).prop_map(|pieces| {
        let mut out = String::from("\"");
        for (piece, escape_all) in pieces {
            for c in piece.chars() {
                let must_escape = c == '"' || c == '\\' || (c as u32) < 0x20;
                if escape_all && (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04X}", c as u32));
                } else if must_escape {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        _ => out.push_str(&format!("\\u{:04x}", c as u32)),
                    }
                } else if c == '/' && escape_all {
                    out.push_str("\\/");
                } else {
                    out.push(c);
                }
            }
        }
        out.push('"');
        out
    })
}

/// A member name that is not an array index (see the module's comment).
fn member_name() -> impl Strategy<Value = String> {
    string_literal().prop_filter(
        "array-index names are ordered first by JavaScript",
        |name| !is_array_index(&name[1..name.len() - 1]),
    )
}

/// `0`, or digits not starting with `0`: a name JavaScript treats as an array index.
fn is_array_index(name: &str) -> bool {
    let digits = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
    digits && (name == "0" || !name.starts_with('0'))
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_owned()),
        Just("-0".to_owned()),
        Just("1.50".to_owned()),
        Just("1E-7".to_owned()),
        Just("1e21".to_owned()),
        Just("1e+21".to_owned()),
        Just("123e-20".to_owned()),
        Just("12345678901234567890".to_owned()),
        Just("0.1".to_owned()),
        Just("-2.5e-3".to_owned()),
        Just("5e-324".to_owned()),
        Just("1.7976931348623157e308".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
    ]
}

fn value() -> impl Strategy<Value = String> + Clone {
    let leaf = prop_oneof![
        string_literal(),
        number(),
        Just("true".to_owned()),
        Just("false".to_owned()),
        Just("null".to_owned()),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|items| format!("[ {} ]", items.join(" , "))),
            object(inner),
        ]
    })
}

/// An object whose member names are unique (duplicates are refused, SPEC §2).
fn object(inner: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = String> {
    proptest::collection::vec((member_name(), inner), 0..4).prop_map(|members| {
        let mut seen = std::collections::HashSet::new();
        let parts: Vec<String> = members
            .into_iter()
            .filter(|(name, _)| {
                let decoded: String = serde_json::from_str(name).unwrap();
                seen.insert(decoded)
            })
            .map(|(name, value)| format!("{name}:\n {value}"))
            .collect();
        format!("{{ {} }}", parts.join(",\t"))
    })
}

/// What Node makes of each body: `JSON.stringify` of it without its top-level `signature`.
fn node_as_sent(bodies: &[String]) -> Vec<String> {
    let script = r#"
        const lines = require("fs").readFileSync(0, "utf8").split("\n").filter(Boolean);
        for (const line of lines) {
          const o = JSON.parse(JSON.parse(line));
          delete o.signature;
          process.stdout.write(JSON.stringify(JSON.stringify(o)) + "\n");
        }"#;
    let mut child = Command::new("node")
        .args(["-e", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for body in bodies {
        input.push_str(&serde_json::to_string(body).unwrap());
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn the_as_sent_message_is_what_node_computes_for_generated_bodies() {
    if !available("node", "--version") {
        return;
    }
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let strategy = (object(value()), string_literal());
    let bodies: Vec<String> = (0..400)
        .map(|_| {
            let (object, signature) = strategy.new_tree(&mut runner).unwrap().current();
            // A top-level `signature` (removed) after the other members, when there are any.
            match object.strip_suffix(" }") {
                Some(open) if open.trim_end() != "{" => {
                    format!("{open}, \"signature\": {signature} }}")
                }
                _ => format!("{{ \"signature\": {signature} }}"),
            }
        })
        .collect();
    let expected = node_as_sent(&bodies);
    assert_eq!(expected.len(), bodies.len());
    for (body, expected) in bodies.iter().zip(expected) {
        let parsed = SignedBody::parse(body.as_bytes())
            .unwrap_or_else(|e| panic!("keyward refused a body Node accepts: {e:?}\n{body}"));
        assert_eq!(parsed.message(MessageForm::AsSent), expected, "\n{body}");
    }
}

#[test]
fn member_names_that_are_array_indices_are_the_known_divergence() {
    if !available("node", "--version") {
        return;
    }
    let body = r#"{"b":1,"10":2,"a":3,"2":4,"signature":"x"}"#.to_owned();
    let node = node_as_sent(std::slice::from_ref(&body));
    assert_eq!(node[0], r#"{"2":4,"10":2,"b":1,"a":3}"#);
    let ours = SignedBody::parse(body.as_bytes())
        .unwrap()
        .message(MessageForm::AsSent);
    assert_eq!(
        ours, r#"{"b":1,"10":2,"a":3,"2":4}"#,
        "keyward keeps the order received"
    );
}
