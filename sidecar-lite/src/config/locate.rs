//! Where in the file a problem is: the line of a field, or of a TOML error.

use super::errors::ConfigProblem;

/// A TOML syntax or type error, with its line and the key it concerns.
pub(super) fn parse_error(text: &str, error: &toml::de::Error) -> ConfigProblem {
    let line = error
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let field = line
        .and_then(|n| text.lines().nth(n - 1))
        .and_then(|l| l.split('=').next())
        .map(|k| k.trim().trim_matches(['[', ']']).to_owned())
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| "(syntax)".to_owned());
    ConfigProblem {
        field,
        line,
        message: error.message().to_owned(),
    }
}

/// The line where `field` (a path like `outbound[1].retry.backoff.base`) is set, found by
/// walking table headers and keys; else the header of the nearest enclosing table.
pub(super) fn locate(text: &str, field: &str) -> Option<usize> {
    let within = |path: &str| field == path || field.starts_with(&format!("{path}."));
    let mut enclosing = None;
    let mut table: Vec<String> = Vec::new();
    let mut array_counts = std::collections::HashMap::<String, usize>::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            let name = name.trim().to_owned();
            let count = array_counts.entry(name.clone()).or_insert(0);
            table = vec![format!("{name}[{count}]")];
            *count += 1;
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            // A sub-table of the latest array element keeps its index: [outbound.retry].
            let mut segments: Vec<String> = name.trim().split('.').map(str::to_owned).collect();
            if let Some(first) = table.first()
                && first.split('[').next() == Some(segments[0].as_str())
            {
                segments[0] = first.clone();
            }
            table = segments;
        } else if let Some((key, _)) = line.split_once('=') {
            let mut path = table.clone();
            path.push(key.trim().to_owned());
            // The exact key, or an inline table holding it (backoff = { base = ... }).
            if within(&path.join(".")) {
                return Some(n + 1);
            }
            continue;
        } else {
            continue;
        }
        // The deepest table that holds the field: [outbound.breaker] over [[outbound]].
        if within(&table.join(".")) && enclosing.is_none_or(|(depth, _)| table.len() > depth) {
            enclosing = Some((table.len(), n + 1));
        }
    }
    enclosing.map(|(_, line)| line)
}
