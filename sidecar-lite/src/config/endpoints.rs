//! `endpoints` of an outbound route, and `[discovery]`: how `dns:` and `file:` sources are
//! found and refreshed.

use serde::{Deserialize, Deserializer, Serialize};
use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

/// `[discovery]`: how the endpoints of `dns:` and `file:` sources are found and refreshed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiscoveryConfig {
    /// The DNS server asked for `dns:` endpoints, `IP:PORT` (UDP, then TCP). Default: the
    /// system's resolver configuration (`/etc/resolv.conf`, with its search domains).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) resolver: Option<SocketAddr>,
    /// The longest time between two lookups of a `dns:` name. A name is looked up again
    /// sooner when its records' TTL runs out, but not more often than once a second (or once
    /// per `dns_refresh`, if shorter). Default 5 s.
    #[serde(default = "default_dns_refresh", with = "resilience_core::duration")]
    pub(crate) dns_refresh: Duration,
    /// How often a `file:` source is checked for changes. A change is applied once the file
    /// reads the same twice in a row, so a file being written is not read half-way.
    /// Default 1 s.
    #[serde(default = "default_file_poll", with = "resilience_core::duration")]
    pub(crate) file_poll: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            resolver: None,
            dns_refresh: default_dns_refresh(),
            file_poll: default_file_poll(),
        }
    }
}

fn default_dns_refresh() -> Duration {
    Duration::from_secs(5)
}

fn default_file_poll() -> Duration {
    Duration::from_secs(1)
}

/// The shortest `dns_refresh` and `file_poll` accepted: shorter would spin.
pub(super) const MIN_DISCOVERY_INTERVAL: Duration = Duration::from_millis(10);

/// One entry of an outbound route's `endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Endpoint {
    /// A fixed address: `10.0.0.7:15006`.
    Static(SocketAddr),
    /// `dns:NAME:PORT`: every A and AAAA record of `NAME`, each at `PORT`, looked up again
    /// as `[discovery]` says.
    Dns {
        /// The name looked up.
        name: String,
        /// The port of every address found.
        port: u16,
    },
    /// `file:PATH`: the addresses listed in a file, re-read when it changes. See
    /// [`parse_endpoints_file`] for the format.
    File(PathBuf),
}

impl Endpoint {
    /// Whether the set of addresses can change while the route serves.
    #[must_use]
    pub(crate) fn is_dynamic(&self) -> bool {
        !matches!(self, Self::Static(_))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static(addr) => write!(f, "{addr}"),
            Self::Dns { name, port } => write!(f, "dns:{name}:{port}"),
            Self::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = text.strip_prefix("dns:") {
            let Some((name, port)) = rest.rsplit_once(':') else {
                return Err(format!("\"{text}\" needs a port: dns:NAME:PORT"));
            };
            let port = match port.parse::<u16>() {
                Ok(0) | Err(_) => {
                    return Err(format!(
                        "\"{text}\": \"{port}\" is not a port from 1 to 65535 (dns:NAME:PORT)"
                    ));
                }
                Ok(port) => port,
            };
            let valid = |label: &str| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            };
            let bare = name.strip_suffix('.').unwrap_or(name);
            if bare.is_empty() || bare.len() > 253 || !bare.split('.').all(valid) {
                return Err(format!(
                    "\"{text}\": \"{name}\" is not a DNS name (dns:NAME:PORT)"
                ));
            }
            Ok(Self::Dns {
                name: name.to_owned(),
                port,
            })
        } else if let Some(path) = text.strip_prefix("file:") {
            if path.trim().is_empty() {
                return Err(format!("\"{text}\" needs a path: file:PATH"));
            }
            Ok(Self::File(PathBuf::from(path)))
        } else {
            text.parse().map(Self::Static).map_err(|_| {
                format!("\"{text}\" is not an IP:PORT address, dns:NAME:PORT or file:PATH")
            })
        }
    }
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The addresses in an endpoints file: one `IP:PORT` a line (blank lines and `#` comments
/// skipped), or a JSON array of `"IP:PORT"` strings, or a JSON object whose `endpoints` key
/// holds such an array. The problem, with its line, if any entry is not an address; an empty
/// list is a problem too (it would leave the route with nowhere to send).
pub(crate) fn parse_endpoints_file(text: &str) -> Result<Vec<SocketAddr>, String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Json {
        List(Vec<String>),
        Object { endpoints: Vec<String> },
    }
    let trimmed = text.trim_start();
    let mut addrs = Vec::new();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let list = match serde_json::from_str::<Json>(text) {
            Ok(Json::List(list) | Json::Object { endpoints: list }) => list,
            Err(e) => {
                return Err(format!(
                    "not a JSON array of \"IP:PORT\" strings (or {{\"endpoints\": [...]}}): {e}"
                ));
            }
        };
        for (i, entry) in list.iter().enumerate() {
            let addr = entry
                .trim()
                .parse()
                .map_err(|_| format!("entry {i}: \"{entry}\" is not an IP:PORT address"))?;
            addrs.push(addr);
        }
    } else {
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let addr = line
                .parse()
                .map_err(|_| format!("line {}: \"{line}\" is not an IP:PORT address", n + 1))?;
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err("lists no endpoint".to_owned());
    }
    Ok(addrs)
}
