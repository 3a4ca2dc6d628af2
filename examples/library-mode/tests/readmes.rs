//! Each crate's README opens with its docs' first example, word for word: the docs' copy is a
//! doctest, and so is the README's (each crate includes its README under `cfg(doctest)`).

const CRATES: [&str; 7] = [
    "resilience-core",
    "resilience-timeout",
    "resilience-retry",
    "resilience-breaker",
    "resilience-mtls",
    "resilience-limit",
    "sidecar-lite",
];

/// The first code block of a crate's `//!` docs, as Markdown: fence, lines, fence.
fn first_doc_example(lib_rs: &str) -> String {
    let docs: Vec<&str> = lib_rs
        .lines()
        .filter_map(|line| {
            line.strip_prefix("//! ")
                .or_else(|| (line == "//!").then_some(""))
        })
        .collect();
    let start = docs
        .iter()
        .position(|line| line.starts_with("```"))
        .expect("the docs have an example");
    let end = start
        + 1
        + docs[start + 1..]
            .iter()
            .position(|line| *line == "```")
            .expect("the example ends");
    let attributes = &docs[start][3..];
    let fence = if attributes.is_empty() {
        "```rust".to_owned()
    } else {
        format!("```rust,{attributes}")
    };
    format!("{fence}\n{}\n```\n", docs[start + 1..end].join("\n"))
}

#[test]
fn each_readme_opens_with_its_docs_first_example() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    for name in CRATES {
        let lib_rs = std::fs::read_to_string(format!("{root}/{name}/src/lib.rs")).unwrap();
        let readme = std::fs::read_to_string(format!("{root}/{name}/README.md")).unwrap();
        let example = first_doc_example(&lib_rs);
        let first_block = readme
            .find("```")
            .map(|at| &readme[at..])
            .expect("the README has an example");
        assert!(
            first_block.starts_with(&example),
            "{name}/README.md must open with the docs' first example:\n{example}"
        );
    }
}
