//! Fuzzing the config parser, [`Config::parse`].
//!
//! cargo-fuzz needs a nightly toolchain, so this is a proptest harness that runs on stable:
//!
//! 1. every file in `tests/corpus/config/` (the example configs, the configs the tests use,
//!    and nasty ones: deep nesting, huge numbers, unicode, duplicate keys, missing brackets,
//!    CR line ends) runs through the checks below;
//! 2. then proptest generates inputs: arbitrary strings, arbitrary bytes read as lossy UTF-8,
//!    and mutations of the corpus files (bytes and lines deleted, duplicated, swapped; tokens,
//!    numbers, quotes and brackets inserted; values replaced).
//!
//! The checks, for every input: nothing panics; an error names a non-empty field and message,
//! and a line that exists in the text, if any; and a config that parses prints, as `check`
//! and the admin server's `/config` print it ([`Config::to_toml`], the effective config with
//! every default filled in), a config that parses back to the very same value.
//!
//! Case counts: a short run by default (CI); set `FUZZ_CASES=N` for N cases per property (the
//! long mode): `FUZZ_CASES=20000 cargo test -p sidecar-lite --test fuzz`. A failing input that
//! proptest finds belongs in the corpus, with the fix.
// The sidecar itself is under test: the `proxy` feature (on by default).
#![cfg(feature = "proxy")]

use proptest::prelude::*;
use sidecar_lite::Config;

/// Cases per property: `FUZZ_CASES` when set, else `short`.
fn cases(short: u32) -> u32 {
    match std::env::var("FUZZ_CASES") {
        Ok(n) => n.parse().expect("FUZZ_CASES must be a whole number"),
        Err(_) => short,
    }
}

fn config(short: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(short),
        ..ProptestConfig::default()
    }
}

/// The corpus files, by name, in name order.
fn corpus() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, String::from_utf8_lossy(&bytes).into_owned())
        })
        .collect()
}

/// Parses `text` and checks the result; returns whether it parsed.
fn check(text: &str) -> bool {
    match Config::parse(text) {
        Ok(config) => {
            let printed = config.to_toml();
            let again = Config::parse(&printed).unwrap_or_else(|e| {
                panic!("the effective config does not parse:\n{e}\n---\n{printed}\n---\n{text}")
            });
            assert_eq!(again, config, "printed:\n{printed}\n---\n{text}");
            true
        }
        Err(errors) => {
            assert!(!errors.errors.is_empty(), "no errors for {text:?}");
            // Lines as an editor counts them: a file ending in a newline has an empty last line.
            let lines = text.split('\n').count();
            for error in &errors.errors {
                assert!(!error.field.is_empty(), "{error:?} in {text:?}");
                assert!(!error.message.trim().is_empty(), "{error:?} in {text:?}");
                if let Some(line) = error.line {
                    assert!(
                        (1..=lines).contains(&line),
                        "{error:?}: no line {line} in {lines} lines of {text:?}"
                    );
                    // The line sets the field or a value that holds it (`timeout = "2s"` for
                    // `timeout.deadline_margin`), or is the header of a table that holds it.
                    let at = text.split('\n').nth(line - 1).unwrap();
                    let mut path = error.field.split('.').map(|s| s.split('[').next().unwrap());
                    assert!(
                        error.field == "(syntax)"
                            || path.any(|segment| at.contains(segment))
                            || at.trim_start().starts_with('['),
                        "{error:?}: line {line} is {at:?} in {text:?}"
                    );
                }
            }
            let shown = errors.to_string();
            for error in &errors.errors {
                assert!(shown.contains(&error.message), "{shown}");
            }
            false
        }
    }
}

#[test]
fn corpus_configs() {
    let corpus = corpus();
    assert!(corpus.len() >= 10, "too few seeds");
    let mut parsed = Vec::new();
    for (name, text) in &corpus {
        if std::panic::catch_unwind(|| check(text)).unwrap_or_else(|_| panic!("{name}")) {
            parsed.push(name.as_str());
        }
    }
    // The examples and the configs the tests use are valid; the nasty ones mostly not.
    for valid in [
        "example-sidecar.toml",
        "kubernetes-configmap.toml",
        "library-mode.toml",
        "minimal-outbound.toml",
        "inline-tables.toml",
        "two-routes.toml",
        "big-values.toml",
        "empty.toml",
    ] {
        assert!(parsed.contains(&valid), "{valid} does not parse");
    }
    assert!(parsed.len() < corpus.len(), "every seed parses: {parsed:?}");
}

/// Things to insert or to put in place of a value: tokens, numbers, quotes, brackets.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    "=",
    ",",
    ".",
    "#",
    "\n",
    "\r",
    "\t",
    " ",
    "\\",
    "\\u",
    "\\U0010FFFF",
    "\\uD800",
    "0",
    "-1",
    "1",
    "+1",
    "00",
    "0x10",
    "1e400",
    "-0.0",
    "nan",
    "inf",
    "-inf",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551616",
    "4294967296",
    "1_000",
    "true",
    "false",
    "1979-05-27T07:32:00Z",
    "\"0s\"",
    "\"1ns\"",
    "\"-1s\"",
    "\"18446744073709551615s\"",
    "\"584542046091years\"",
    "\"1 MiB\"",
    "\"99999999999999999999MiB\"",
    "\"\"",
    "\"127.0.0.1:0\"",
    "\"[::1]:80\"",
    "\"spiffe://example.org/ns/a/sa/*\"",
    "\"5xx\"",
    "[\"5xx\", \"unknown\"]",
    "{ calls = 0 }",
    "{ duration = \"0s\" }",
    "{}",
    "[]",
    "[outbound.retry]",
    "[[outbound]]",
    "[admin]",
    "[inbound]",
    "[limits]",
    "[log]",
    "[runtime]",
    "[identity]",
    "a.b.c",
    "é",
    "💳",
    "\u{0}",
    "\u{feff}",
    "\u{202e}",
    "\"\\u0000\"",
];

/// One edit of a config's text.
#[derive(Debug, Clone)]
enum Edit {
    DeleteByte(prop::sample::Index),
    InsertToken(prop::sample::Index, &'static str),
    DeleteLine(prop::sample::Index),
    DuplicateLine(prop::sample::Index),
    SwapLines(prop::sample::Index, prop::sample::Index),
    /// Everything after the first `=` of a line.
    ReplaceValue(prop::sample::Index, &'static str),
    ReplaceByte(prop::sample::Index, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    let token = proptest::sample::select(TOKENS);
    let index = any::<prop::sample::Index>;
    prop_oneof![
        2 => index().prop_map(Edit::DeleteByte),
        3 => (index(), token.clone()).prop_map(|(i, t)| Edit::InsertToken(i, t)),
        2 => index().prop_map(Edit::DeleteLine),
        1 => index().prop_map(Edit::DuplicateLine),
        1 => (index(), index()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        4 => (index(), token).prop_map(|(i, t)| Edit::ReplaceValue(i, t)),
        1 => (index(), any::<u8>()).prop_map(|(i, b)| Edit::ReplaceByte(i, b)),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    match edit {
        Edit::DeleteByte(at) => {
            if !bytes.is_empty() {
                bytes.remove(at.index(bytes.len()));
            }
        }
        Edit::InsertToken(at, token) => {
            let at = at.index(bytes.len() + 1);
            bytes.splice(at..at, token.bytes());
        }
        Edit::ReplaceByte(at, byte) => {
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                bytes[at] = *byte;
            }
        }
        Edit::DeleteLine(at) => {
            lines.remove(at.index(lines.len()));
            return lines.join("\n");
        }
        Edit::DuplicateLine(at) => {
            let at = at.index(lines.len());
            lines.insert(at, lines[at].clone());
            return lines.join("\n");
        }
        Edit::SwapLines(a, b) => {
            let (a, b) = (a.index(lines.len()), b.index(lines.len()));
            lines.swap(a, b);
            return lines.join("\n");
        }
        Edit::ReplaceValue(at, token) => {
            let at = at.index(lines.len());
            if let Some((key, _)) = lines[at].split_once('=') {
                lines[at] = format!("{key}= {token}");
            }
            return lines.join("\n");
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn mutated() -> impl Strategy<Value = String> {
    let seeds: Vec<String> = corpus().into_iter().map(|(_, text)| text).collect();
    (
        proptest::sample::select(seeds),
        proptest::collection::vec(edit(), 1..6),
    )
        .prop_map(|(seed, edits)| edits.iter().fold(seed, |text, e| apply(&text, e)))
}

/// A valid config with one value replaced: mostly still TOML, so the checks after parsing run.
fn one_value_changed() -> impl Strategy<Value = String> {
    let seeds: Vec<String> = corpus()
        .into_iter()
        .filter(|(_, text)| Config::parse(text).is_ok() && text.contains('='))
        .map(|(_, text)| text)
        .collect();
    (
        proptest::sample::select(seeds),
        any::<prop::sample::Index>(),
        proptest::sample::select(TOKENS),
    )
        .prop_map(|(seed, at, token)| apply(&seed, &Edit::ReplaceValue(at, token)))
}

/// A TOML value: any string (quoted and escaped as TOML writes it), strings near what the
/// config's own parsers read (durations, sizes, addresses, identities, log filters), any
/// integer, any float.
fn any_value() -> impl Strategy<Value = String> {
    let quoted = |s: String| toml::Value::String(s).to_string();
    prop_oneof![
        any::<String>().prop_map(quoted),
        "[0-9]{0,25} ?(ns|us|µs|ms|s|m|h|d|w|M|y|years|months|KB|KiB|MB|MiB|B|x)? ?[0-9]{0,3}[a-z]{0,2}"
            .prop_map(quoted),
        "(spiffe://)?[a-z.*]{0,8}(/[a-z*]{0,4}){0,5}/?".prop_map(quoted),
        "(\\[?[0-9a-f:.]{0,20}\\]?)?:?[0-9]{0,6}".prop_map(quoted),
        "[a-z_:]{0,10}(\\[[a-z{}=\"0-9]{0,10}\\])?(=[a-z]{0,6})?(,[a-z=]{0,8}){0,3}".prop_map(quoted),
        proptest::collection::vec("[0-9a-z-]{0,25}".prop_map(quoted), 0..4)
            .prop_map(|items| format!("[{}]", items.join(", "))),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| toml::Value::Float(x).to_string()),
    ]
}

/// A valid config with one value replaced by [`any_value`].
fn value_replaced() -> impl Strategy<Value = String> {
    let seeds: Vec<String> = corpus()
        .into_iter()
        .filter(|(_, text)| Config::parse(text).is_ok() && text.contains('='))
        .map(|(_, text)| text)
        .collect();
    (
        proptest::sample::select(seeds),
        any::<prop::sample::Index>(),
        any_value(),
    )
        .prop_map(|(seed, at, value)| {
            let mut lines: Vec<String> = seed.split('\n').map(str::to_owned).collect();
            let keys: Vec<usize> = (0..lines.len())
                .filter(|&i| !lines[i].trim_start().starts_with('#') && lines[i].contains('='))
                .collect();
            let i = keys[at.index(keys.len())];
            let key = lines[i].split_once('=').unwrap().0.to_owned();
            lines[i] = format!("{key}= {value}");
            lines.join("\n")
        })
}

/// Deep nesting of arrays and inline tables, where a value is expected.
fn nested() -> impl Strategy<Value = String> {
    (
        0usize..3,
        1usize..3000,
        any::<bool>(),
        proptest::sample::select(vec!["timeout", "retry", "breaker", "endpoints", "name"]),
    )
        .prop_map(|(kind, depth, closed, key)| {
            let (open, close) = match kind {
                0 => ("[".repeat(depth), "]".repeat(depth)),
                1 => ("{ a = ".repeat(depth), " }".repeat(depth)),
                _ => ("[{ a = ".repeat(depth), " }]".repeat(depth)),
            };
            let close = if closed { close } else { String::new() };
            format!(
                "[[outbound]]\nname = \"deep\"\nlisten = \"127.0.0.1:1\"\nendpoints = [\"127.0.0.1:2\"]\n{key} = {open}1{close}\n"
            )
        })
}

proptest! {
    #![proptest_config(config(1_000))]

    #[test]
    fn arbitrary_strings(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn mutated_corpus(text in mutated()) {
        check(&text);
    }

    #[test]
    fn one_value_changed_in_a_valid_config(text in one_value_changed()) {
        check(&text);
    }

    #[test]
    fn any_value_in_a_valid_config(text in value_replaced()) {
        check(&text);
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn deep_nesting(text in nested()) {
        check(&text);
    }
}

/// The generators reach both sides: many inputs fail (the error checks run), and many parse
/// (the round trip runs).
#[test]
fn generated_inputs_both_parse_and_fail() {
    use proptest::{strategy::ValueTree, test_runner::TestRunner};
    let mut runner = TestRunner::deterministic();
    for (name, strategy) in [
        ("mutated", mutated().boxed()),
        ("one value changed", one_value_changed().boxed()),
        ("any value", value_replaced().boxed()),
    ] {
        let parsed = (0..200)
            .filter(|_| check(&strategy.new_tree(&mut runner).unwrap().current()))
            .count();
        assert!((10..190).contains(&parsed), "{name}: {parsed} of 200 parse");
    }
}
