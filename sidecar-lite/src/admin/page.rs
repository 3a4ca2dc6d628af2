//! The status page: the golden signals of each listener, each endpoint's breaker and load, our
//! identity, the peers seen and the process, served from the binary with no external assets.
//!
//! The server writes every figure, so the page reads the same without JavaScript (it then
//! reloads itself every 5 seconds). With JavaScript, it polls `/status.json` every 2 seconds
//! and draws the request rate and p99 of the last five minutes of each listener from it, and
//! swaps in the tables of a fresh copy of the page.

use super::{
    AdminState,
    status::{EndpointView, IdentityView, ListenerView, Status},
};
use crate::proxy::Point;
use std::fmt::Write as _;

const STYLE: &str = concat!(
    "body{font:14px system-ui,sans-serif;margin:2em;color:#222}",
    "table{border-collapse:collapse;margin-bottom:1.5em}",
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}",
    "td.n{text-align:right;font-variant-numeric:tabular-nums}",
    ".closed{color:#176117}.open,.forced-open{color:#a11}.half-open{color:#a60}",
    ".warn{color:#a11;font-weight:bold}",
    "figure{display:inline-block;margin:0 1.5em 1em 0}figcaption{font-size:12px}",
    "svg{border:1px solid #ddd;background:#fafafa}",
    ".rps{stroke:#4e79a7}.p99{stroke:#e15759}polyline{fill:none;stroke-width:1.5}",
);

/// Charts are this many pixels wide and high.
const CHART: (f64, f64) = (300.0, 60.0);

const SCRIPT: &str = r#"
"use strict";
const W = 300, H = 60;
function line(points, key, cls) {
  const values = points.map(p => p[key] ?? 0);
  const top = Math.max(...values, 1e-9);
  const xy = values.map((v, i) =>
    `${(i * W / Math.max(values.length - 1, 1)).toFixed(1)},${(H - 2 - v / top * (H - 4)).toFixed(1)}`);
  return `<polyline class="${cls}" points="${xy.join(" ")}"/>`;
}
function draw(listener) {
  const figure = document.querySelector(`figure[data-listener="${CSS.escape(listener.name)}"]`);
  if (!figure) return;
  const svg = figure.querySelector("svg");
  svg.innerHTML = line(listener.series, "rps", "rps") + line(listener.series, "p99_ms", "p99");
  svg.dataset.drawn = "status.json";
  const last = listener.window;
  figure.querySelector("figcaption").textContent =
    `${listener.name}: ${last.rps.toFixed(2)} req/s, p99 ${last.p99_ms == null ? "-" : last.p99_ms.toFixed(1) + " ms"} (last minute)`;
}
async function refresh() {
  try {
    const status = await (await fetch("/status.json", {cache: "no-store"})).json();
    status.listeners.forEach(draw);
    const page = new DOMParser().parseFromString(await (await fetch("/", {cache: "no-store"})).text(), "text/html");
    const fresh = page.getElementById("figures"), here = document.getElementById("figures");
    if (fresh && here) here.innerHTML = fresh.innerHTML;
    document.getElementById("stale").textContent = "";
  } catch (error) {
    document.getElementById("stale").textContent = "(not refreshed: " + error + ")";
  }
}
refresh();
setInterval(refresh, 2000);
"#;

pub(super) fn render(state: &AdminState) -> String {
    let status = super::status::status(state);
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>\
         <title>sidecar-lite</title><style>{STYLE}</style></head><body>\n\
         <h1>sidecar-lite <small>{}</small> <small id=\"stale\"></small></h1>\n",
        status.process.version
    );
    html.push_str("<div id=\"figures\">\n");
    process(&mut html, &status);
    listeners(&mut html, &status.listeners);
    endpoints(&mut html, &status.endpoints);
    identity(&mut html, status.identity.as_ref());
    peers(&mut html, &status.listeners);
    html.push_str("</div>\n");
    charts(&mut html, &status.listeners);
    let _ = write!(
        html,
        "<p><a href=\"/status.json\">status.json</a> · <a href=\"/metrics\">metrics</a> · \
         <a href=\"/config\">config</a> · <a href=\"/breakers\">breakers</a></p>\n\
         <script>{SCRIPT}</script>\n</body></html>\n"
    );
    html
}

fn process(html: &mut String, status: &Status) {
    let p = &status.process;
    let _ = writeln!(
        html,
        "<p id=\"process\">status: <b id=\"status\">{}</b> · up {} · {} worker thread{} · RSS {} · \
         CPU {}</p>",
        p.status,
        humantime::format_duration(std::time::Duration::from_secs(p.uptime_seconds)),
        p.worker_threads,
        if p.worker_threads == 1 { "" } else { "s" },
        p.rss_bytes.map_or_else(
            || "-".to_owned(),
            |b| format!("{:.1} MiB", b as f64 / 1048576.0)
        ),
        p.cpu_seconds
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.2} s")),
    );
}

fn listeners(html: &mut String, listeners: &[ListenerView]) {
    html.push_str(
        "<h2>Listeners, last minute</h2><table id=\"listeners\"><tr><th>listener</th>\
         <th>address</th><th>connections</th><th>requests</th><th>req/s</th><th>success</th>\
         <th>p50</th><th>p95</th><th>p99</th><th>retries/s</th><th>retried</th>\
         <th>rejected (x-sidecar-error)</th><th>retry budget</th></tr>\n",
    );
    for l in listeners {
        let w = &l.signals.window;
        let rejected: Vec<String> = w
            .rejected
            .iter()
            .map(|r| format!("{} {}", escape(&r.reason), r.requests))
            .collect();
        let _ = writeln!(
            html,
            "<tr data-listener=\"{name}\"><td>{name}</td><td>{}</td><td class=\"n\" data-field=\"connections_open\">{}</td>\
             <td class=\"n\" data-field=\"requests\">{}</td><td class=\"n\" data-field=\"rps\">{:.2}</td>\
             <td class=\"n\" data-field=\"success_rate\">{}</td><td class=\"n\" data-field=\"p50\">{}</td>\
             <td class=\"n\" data-field=\"p95\">{}</td><td class=\"n\" data-field=\"p99\">{}</td>\
             <td class=\"n\" data-field=\"retries_per_second\">{:.2}</td>\
             <td class=\"n\" data-field=\"retried_share\">{}</td><td data-field=\"rejected\">{}</td>\
             <td class=\"n\" data-field=\"retry_budget\">{}</td></tr>",
            l.address.map_or_else(|| "-".to_owned(), |a| a.to_string()),
            l.connections_open,
            w.requests,
            w.rps,
            percent(w.success_rate),
            millis(w.p50_ms),
            millis(w.p95_ms),
            millis(w.p99_ms),
            w.retries_per_second,
            percent(w.retried_share),
            if rejected.is_empty() {
                "-".to_owned()
            } else {
                rejected.join(", ")
            },
            l.retry_budget
                .map_or_else(|| "-".to_owned(), |b| b.to_string()),
            name = escape(&l.name),
        );
    }
    html.push_str("</table>\n");
}

fn endpoints(html: &mut String, endpoints: &[EndpointView]) {
    html.push_str(
        "<h2>Endpoints</h2><table id=\"breakers\"><tr><th>route</th><th>endpoint</th>\
         <th>breaker</th><th>calls</th><th>failure rate</th><th>slow-call rate</th>\
         <th>balancer load</th><th>recent transitions</th></tr>\n",
    );
    for e in endpoints {
        let transitions: Vec<String> = e
            .transitions
            .iter()
            .map(|t| format!("{} -> {} {:.0} s ago", t.from, t.to, t.seconds_ago))
            .collect();
        let _ = writeln!(
            html,
            "<tr data-route=\"{route}\" data-endpoint=\"{endpoint}\"><td>{route}</td><td>{endpoint}</td>\
             <td class=\"{state}\">{state}</td><td class=\"n\">{}</td><td class=\"n\">{:.1}%</td>\
             <td class=\"n\">{:.1}%</td><td class=\"n\">{}</td><td>{}</td></tr>",
            e.calls,
            e.failure_rate * 100.0,
            e.slow_call_rate * 100.0,
            e.load
                .map_or_else(|| "-".to_owned(), |l| format!("{:.0} us", l / 1e3)),
            if transitions.is_empty() {
                "-".to_owned()
            } else {
                transitions.join("; ")
            },
            route = escape(&e.route),
            endpoint = e.endpoint,
            state = e.state,
        );
    }
    html.push_str("</table>\n");
}

fn identity(html: &mut String, identity: Option<&IdentityView>) {
    html.push_str("<h2>Identity</h2>");
    let Some(id) = identity else {
        html.push_str("<p id=\"identity\">no [identity]: plaintext only</p>\n");
        return;
    };
    let left = humantime::format_duration(std::time::Duration::from_secs(id.expires_in_seconds));
    let _ = writeln!(
        html,
        "<table id=\"identity\"><tr><th>identity</th><td>{}</td></tr>\
         <tr><th>certificate</th><td{}>valid {} to {}: {left} left ({:.0}% of its lifetime){}</td></tr>\
         <tr><th>trust bundle</th><td>{}</td></tr>",
        escape(&id.identity),
        if id.expiring_soon {
            " class=\"warn\""
        } else {
            ""
        },
        id.not_before,
        id.not_after,
        id.lifetime_left * 100.0,
        if id.expiring_soon {
            ": less than 20% left, rotation is late"
        } else {
            ""
        },
        subjects(&id.trust),
    );
    for (domain, trust) in &id.trust_domains {
        let _ = writeln!(
            html,
            "<tr><th>trust domain {}</th><td>{}</td></tr>",
            escape(domain),
            subjects(trust)
        );
    }
    for crl in &id.crls {
        let _ = writeln!(
            html,
            "<tr><th>revocation list</th><td{}>{}: next update {}{}</td></tr>",
            if crl.overdue { " class=\"warn\"" } else { "" },
            escape(&crl.issuer),
            crl.next_update.as_deref().unwrap_or("not said"),
            if crl.overdue {
                ", overdue: revocations since are unknown"
            } else {
                ""
            },
        );
    }
    html.push_str("</table>\n");
}

/// CA subjects, one per line.
fn subjects(subjects: &[String]) -> String {
    subjects
        .iter()
        .map(|s| escape(s))
        .collect::<Vec<_>>()
        .join("<br>")
}

fn peers(html: &mut String, listeners: &[ListenerView]) {
    let Some(inbound) = listeners.iter().find(|l| l.name == "inbound") else {
        return;
    };
    html.push_str(
        "<h2>Peers seen inbound</h2><table id=\"peers\"><tr><th>identity</th><th>requests</th></tr>\n",
    );
    for peer in &inbound.signals.peers {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
            escape(&peer.identity),
            peer.requests
        );
    }
    if inbound.signals.other_peers > 0 {
        let _ = writeln!(
            html,
            "<tr><td>(others)</td><td class=\"n\">{}</td></tr>",
            inbound.signals.other_peers
        );
    }
    html.push_str("</table>\n");
}

/// The charts, as the server draws them for a page without JavaScript; the script redraws
/// them from `/status.json`.
fn charts(html: &mut String, listeners: &[ListenerView]) {
    html.push_str(
        "<h2>Last five minutes</h2><p><span class=\"rps\">&#9644;</span> requests per second \
         · <span class=\"p99\">&#9644;</span> p99, each scaled to its own maximum</p>\n",
    );
    for l in listeners {
        let _ = writeln!(
            html,
            "<figure data-listener=\"{name}\"><svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
             role=\"img\" aria-label=\"{name}\">{}{}</svg><figcaption>{name}</figcaption></figure>",
            polyline(&l.signals.series, |p| p.rps, "rps"),
            polyline(&l.signals.series, |p| p.p99_ms.unwrap_or(0.0), "p99"),
            name = escape(&l.name),
            w = CHART.0,
            h = CHART.1,
        );
    }
}

fn polyline(points: &[Point], value: impl Fn(&Point) -> f64, class: &str) -> String {
    let values: Vec<f64> = points.iter().map(value).collect();
    let top = values.iter().copied().fold(1e-9, f64::max);
    let step = CHART.0 / (values.len().max(2) - 1) as f64;
    let xy: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                CHART.1 - 2.0 - v / top * (CHART.1 - 4.0)
            )
        })
        .collect();
    format!("<polyline class=\"{class}\" points=\"{}\"/>", xy.join(" "))
}

fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "-".to_owned(), |s| format!("{:.1}%", s * 100.0))
}

fn millis(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
