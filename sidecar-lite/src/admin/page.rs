//! The status page: listeners, breaker states and the main counters at a glance, served from
//! the binary with no external assets, refreshing itself every 2 seconds.

use super::AdminState;
use std::fmt::Write as _;

pub(super) fn render(state: &AdminState) -> String {
    let mut html = String::from(concat!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"refresh\" content=\"2\">",
        "<title>sidecar-lite</title><style>",
        "body{font:14px system-ui,sans-serif;margin:2em;color:#222}",
        "table{border-collapse:collapse;margin-bottom:1.5em}",
        "td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}",
        ".closed{color:#176117}.open,.forced-open{color:#a11}.half-open{color:#a60}",
        "</style></head><body><h1>sidecar-lite</h1>\n",
    ));
    let status = if state.draining() {
        "draining"
    } else if state.ready.load(std::sync::atomic::Ordering::Acquire) {
        "ready"
    } else {
        "starting"
    };
    let _ = writeln!(html, "<p id=\"status\">status: <b>{status}</b></p>");

    html.push_str(
        "<h2>Listeners</h2><table id=\"listeners\"><tr><th>name</th><th>address</th></tr>\n",
    );
    let serving = state.serving.load();
    for (name, addr) in &serving.listeners {
        let _ = writeln!(html, "<tr><td>{}</td><td>{addr}</td></tr>", escape(name));
    }
    html.push_str("</table>\n<h2>Breakers</h2><table id=\"breakers\"><tr><th>route</th><th>endpoint</th><th>state</th><th>calls</th><th>failures</th></tr>\n");
    for breaker in &serving.breakers() {
        let counts = breaker.handle.counts();
        let name = breaker.handle.state().as_str();
        let _ = writeln!(
            html,
            "<tr data-route=\"{}\" data-endpoint=\"{}\"><td>{}</td><td>{}</td><td class=\"{name}\">{name}</td><td>{}</td><td>{}</td></tr>",
            escape(&breaker.route),
            breaker.endpoint,
            escape(&breaker.route),
            breaker.endpoint,
            counts.calls,
            counts.failures,
        );
    }
    html.push_str("</table>\n<h2>Requests</h2><table id=\"requests\"><tr><th>listener</th><th>class</th><th>count</th></tr>\n");
    for (listener, class, count) in request_counts(state) {
        let _ = writeln!(
            html,
            "<tr data-listener=\"{0}\" data-class=\"{1}\"><td>{0}</td><td>{1}</td><td>{2}</td></tr>",
            escape(&listener),
            escape(&class),
            count
        );
    }
    html.push_str("</table>\n<p><a href=\"/metrics\">metrics</a> · <a href=\"/config\">config</a> · <a href=\"/breakers\">breakers</a></p>\n</body></html>\n");
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `sidecar_requests_total` by listener and status class, read from the recorder's own
/// rendering, so the page shows exactly what `/metrics` says.
fn request_counts(state: &AdminState) -> Vec<(String, String, u64)> {
    let Some(handle) = &state.metrics else {
        return Vec::new();
    };
    let mut counts: Vec<(String, String, u64)> = handle
        .render()
        .lines()
        .filter_map(|line| line.strip_prefix("sidecar_requests_total{"))
        .filter_map(|rest| {
            let (labels, value) = rest.split_once("} ")?;
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix("=\""))
                    .map(|v| v.trim_end_matches('"').to_owned())
            };
            let count = value.trim().parse::<f64>().ok()? as u64;
            (count > 0).then_some((label("listener")?, label("class")?, count))
        })
        .collect();
    counts.sort();
    counts
}
