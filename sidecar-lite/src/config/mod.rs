//! The config file: parsed and validated here, and nothing else. What the other modules get is
//! typed and checked: addresses, durations, identities and allow-lists are parsed once, here.
//!
//! Every section that a middleware crate also reads (`timeout`, `retry`, `breaker`,
//! `identity`) deserializes into that crate's own config type, so library users load the very
//! same TOML. See `examples/sidecar.toml` for every key with its default.

mod access_log;
mod endpoints;
mod errors;
mod explain;
mod limits;
mod locate;
mod process;
mod routes;
mod text;
mod tracing;
mod validate;

pub(crate) use access_log::AccessLogConfig;
pub(crate) use endpoints::{DiscoveryConfig, Endpoint, parse_endpoints_file};
pub use errors::{ConfigErrors, ConfigProblem};
pub(crate) use limits::ConcurrencyLimit;
#[cfg(feature = "proxy")]
pub(crate) use process::log_filter;
pub(crate) use process::{AdminConfig, LimitsConfig, LogConfig, LogFormat, RuntimeConfig};
pub(crate) use routes::{FaultConfig, OriginTls, UpstreamProtocol};
pub use routes::{InboundConfig, OutboundConfig};
pub(crate) use tracing::TracingConfig;

use locate::{locate, parse_error};
use resilience_mtls::IdentityConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The admin server.
    #[serde(default)]
    pub(crate) admin: AdminConfig,
    /// Our workload identity: certificate, key and trust bundle. Needed for mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) identity: Option<IdentityConfig>,
    /// Traffic from other sidecars to our app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) inbound: Option<InboundConfig>,
    /// Traffic from our app to remote services, one route each.
    #[serde(default)]
    pub(crate) outbound: Vec<OutboundConfig>,
    /// Logging.
    #[serde(default)]
    pub(crate) log: LogConfig,
    /// The async runtime.
    #[serde(default)]
    pub(crate) runtime: RuntimeConfig,
    /// Limits on each client connection, for every listener.
    #[serde(default)]
    pub(crate) limits: LimitsConfig,
    /// Tracing export: a span for each proxied request, sent to an OTLP collector. Off when
    /// the section is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tracing: Option<TracingConfig>,
    /// How `dns:` and `file:` endpoints are discovered.
    #[serde(default)]
    pub(crate) discovery: DiscoveryConfig,
    /// One line per request. Off when the section is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) access_log: Option<AccessLogConfig>,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let file = Some(path.display().to_string());
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: file.clone(),
            errors: vec![ConfigProblem {
                field: "(file)".to_owned(),
                line: None,
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Self::parse(&text).map_err(|mut errors| {
            errors.file = file;
            errors
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigErrors {
            file: None,
            errors: vec![parse_error(text, &e)],
        })?;
        let errors: Vec<ConfigProblem> = validate::problems(&config)
            .into_iter()
            .map(|(field, message)| ConfigProblem {
                line: locate(text, &field),
                field,
                message,
            })
            .collect();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors { file: None, errors })
        }
    }

    /// The `[[outbound]]` route called `name`.
    #[must_use]
    pub fn outbound_route(&self, name: &str) -> Option<&OutboundConfig> {
        self.outbound.iter().find(|route| route.name == name)
    }

    /// The `[inbound]` section, if any.
    #[must_use]
    pub fn inbound(&self) -> Option<&InboundConfig> {
        self.inbound.as_ref()
    }

    /// The `[identity]` section, if any: our certificate, key and trust bundle.
    #[must_use]
    pub fn identity(&self) -> Option<&IdentityConfig> {
        self.identity.as_ref()
    }

    /// The effective config, every default filled in, as TOML.
    #[must_use]
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print the config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::{Config, Endpoint, locate::locate, parse_endpoints_file};
    use std::path::PathBuf;

    fn route(endpoints: &str) -> String {
        format!(
            "[[outbound]]\nname = \"orders\"\nlisten = \"127.0.0.1:15001\"\nendpoints = [{endpoints}]\n"
        )
    }

    /// The single error of `text`, as printed.
    fn error(text: &str) -> String {
        let errors = Config::parse(text).unwrap_err();
        assert_eq!(errors.errors.len(), 1, "{errors}");
        errors.to_string()
    }

    #[test]
    fn endpoints_are_addresses_dns_names_or_files() {
        let cases = [
            (
                "10.0.0.7:15006",
                Endpoint::Static("10.0.0.7:15006".parse().unwrap()),
            ),
            ("[::1]:80", Endpoint::Static("[::1]:80".parse().unwrap())),
            (
                "dns:payments.shop.svc.cluster.local:15006",
                Endpoint::Dns {
                    name: "payments.shop.svc.cluster.local".into(),
                    port: 15006,
                },
            ),
            (
                "dns:payments.:80",
                Endpoint::Dns {
                    name: "payments.".into(),
                    port: 80,
                },
            ),
            (
                "file:/etc/endpoints.json",
                Endpoint::File(PathBuf::from("/etc/endpoints.json")),
            ),
        ];
        for (text, endpoint) in cases {
            assert_eq!(text.parse::<Endpoint>().unwrap(), endpoint, "{text}");
            assert_eq!(endpoint.to_string(), text);
        }
        for (text, problem) in [
            ("dns:payments.shop.svc", "needs a port: dns:NAME:PORT"),
            ("dns:payments:0", "is not a port"),
            ("dns:payments:http", "is not a port"),
            ("dns::80", "is not a DNS name"),
            ("dns:pay ments:80", "is not a DNS name"),
            ("file:", "needs a path"),
            (
                "payments:80",
                "is not an IP:PORT address, dns:NAME:PORT or file:PATH",
            ),
        ] {
            let error = text.parse::<Endpoint>().unwrap_err();
            assert!(error.contains(problem), "{text}: {error}");
        }
    }

    #[test]
    fn endpoint_errors_name_the_line_and_field() {
        let text = route("\"dns:payments.shop.svc\"");
        let message = error(&text);
        assert!(message.contains("line 4: `endpoints`"), "{message}");
        assert!(message.contains("needs a port: dns:NAME:PORT"), "{message}");

        let message = error(&route("\"file:/nonexistent/endpoints.txt\""));
        assert!(
            message.contains("line 4: `outbound[0].endpoints`: \"file:/nonexistent/endpoints.txt\": cannot read the file"),
            "{message}"
        );

        let message = error(&route("\"10.0.0.7:80\", \"10.0.0.8:80\", \"10.0.0.7:80\""));
        assert!(
            message.contains("`outbound[0].endpoints`: \"10.0.0.7:80\" is listed twice"),
            "{message}"
        );

        let message = error(&route("\"10.0.0.7:80\", \"dns:payments:80\""));
        assert!(
            message.contains(
                "`outbound[0].endpoints`: \"dns:payments:80\" must be the route's only entry"
            ),
            "{message}"
        );

        let message = error(&format!(
            "[discovery]\ndns_refresh = \"1ms\"\n{}",
            route("\"dns:payments:80\"")
        ));
        assert!(
            message.contains("line 2: `discovery.dns_refresh`: 1ms is below the minimum of 10ms"),
            "{message}"
        );
        let message = error(&format!(
            "[discovery]\nresolver = \"10.0.0.1\"\n{}",
            route("\"dns:payments:80\"")
        ));
        assert!(message.contains("line 2: `resolver`"), "{message}");

        let config = Config::parse(&format!(
            "[discovery]\nresolver = \"127.0.0.1:5353\"\n{}",
            route("\"dns:payments:80\"")
        ))
        .unwrap();
        assert_eq!(
            config.discovery.resolver,
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert!(
            config
                .to_toml()
                .contains("endpoints = [\"dns:payments:80\"]")
        );
    }

    /// Two listeners the system would not bind together are refused with the second one's
    /// line: the same address, or a wildcard over the other's (`check` passed them, and `run`
    /// failed with "address in use").
    #[test]
    fn listeners_that_cannot_be_bound_together_are_refused() {
        let two = |first: &str, second: &str| {
            format!(
                "[[outbound]]\nname = \"a\"\nallow_remote_callers = true\nlisten = \"{first}\"\n\
                 endpoints = [\"127.0.0.1:8080\"]\n\
                 [[outbound]]\nname = \"b\"\nallow_remote_callers = true\nlisten = \"{second}\"\n\
                 endpoints = [\"127.0.0.1:8080\"]\n"
            )
        };
        for (first, second, expected) in [
            (
                "127.0.0.1:15001",
                "127.0.0.1:15001",
                "already used by another listener",
            ),
            (
                "127.0.0.1:15001",
                "0.0.0.0:15001",
                "overlaps 127.0.0.1:15001",
            ),
            ("0.0.0.0:15001", "127.0.0.1:15001", "overlaps 0.0.0.0:15001"),
            ("[::]:15001", "127.0.0.1:15001", "overlaps [::]:15001"),
        ] {
            let message = error(&two(first, second));
            assert!(
                message.contains("line 9: `outbound[1].listen`") && message.contains(expected),
                "{first} then {second}: {message}"
            );
        }
        for (first, second) in [
            ("127.0.0.1:15001", "127.0.0.1:15002"),
            ("127.0.0.1:15001", "127.0.0.2:15001"),
            ("0.0.0.0:15001", "[::1]:15001"),
            ("127.0.0.1:0", "127.0.0.1:0"),
        ] {
            assert!(
                Config::parse(&two(first, second)).is_ok(),
                "{first} and {second}"
            );
        }
    }

    /// A per-try timeout within the deadline margin would tell every attempt's next hop that no
    /// time is left: refused, naming the per-try timeout.
    #[test]
    fn a_per_try_timeout_within_the_deadline_margin_is_refused() {
        let route = |retry: &str| {
            format!(
                "[[outbound]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nendpoints = [\"127.0.0.1:8080\"]\n\
                 [outbound.timeout]\ntimeout = \"50ms\"\n[outbound.retry]\n{retry}\n"
            )
        };
        let message = error(&route("per_try_timeout = \"4ms\""));
        assert!(
            message.contains("`outbound[0].retry.per_try_timeout`: 4ms must be more than"),
            "{message}"
        );
        assert!(Config::parse(&route("per_try_timeout = \"6ms\"")).is_ok());
    }

    #[test]
    fn a_plaintext_route_checks_no_identity() {
        let text = format!(
            "[identity]\ncert = \"c.pem\"\nkey = \"k.pem\"\ntrust = \"t.pem\"\n\n{}\
             server_identity = \"spiffe://example.org/ns/a/sa/b\"\nplaintext = true\n",
            route("\"10.0.0.7:80\"")
        );
        let message = error(&text);
        assert!(
            message.contains("line 11: `outbound[0].plaintext`")
                && message.contains("contradicts `server_identity`"),
            "{message}"
        );
        assert!(Config::parse(&text.replace("plaintext = true\n", "")).is_ok());
    }

    #[test]
    fn a_federated_trust_domain_is_named_as_one() {
        let text = "[identity]\ncert = \"c.pem\"\nkey = \"k.pem\"\ntrust = \"t.pem\"\n\n\
                    [identity.trust_domains]\n\"partner.example\" = \"p.pem\"\n\
                    \"Partner.Example\" = \"q.pem\"\n";
        let message = error(text);
        assert!(
            message.contains("line 8: `identity.trust_domains.\"Partner.Example\"`")
                && message.contains("`Partner.Example` is not a SPIFFE trust domain")
                && message.contains("only lowercase letters"),
            "{message}"
        );
        assert!(Config::parse(&text.replace("Partner.Example", "other.example")).is_ok());
    }

    /// A limit past what a process can afford is refused with its line, not taken and then
    /// allocated at the first request (4 294 967 296 headers would abort the process).
    #[test]
    fn limits_have_ceilings_as_well_as_floors() {
        for (line, field, maximum) in [
            ("max_headers = 4294967296", "limits.max_headers", "10000"),
            (
                "max_head_bytes = 4294967296",
                "limits.max_head_bytes",
                "8388608",
            ),
            (
                "max_connections = 99999999999",
                "limits.max_connections",
                "1048576",
            ),
        ] {
            let message = error(&format!("[limits]\n{line}\n"));
            assert!(
                message.contains(&format!("line 2: `{field}`"))
                    && message.contains(&format!("is above the maximum of {maximum}")),
                "{message}"
            );
        }
        assert!(Config::parse("[limits]\nmax_headers = 10000\nmax_head_bytes = 8388608\n").is_ok());
    }

    #[test]
    fn endpoint_protocol_is_auto_unless_set_and_a_wrong_one_is_named() {
        use super::UpstreamProtocol;
        let endpoints = "\"10.0.0.7:80\"";
        let protocol = |extra: &str| {
            Config::parse(&format!("{}{extra}", route(endpoints)))
                .unwrap()
                .outbound[0]
                .endpoint_protocol
        };
        assert_eq!(protocol(""), UpstreamProtocol::Auto);
        assert_eq!(
            protocol("endpoint_protocol = \"http1\"\n"),
            UpstreamProtocol::Http1
        );
        assert_eq!(
            protocol("endpoint_protocol = \"http2\"\n"),
            UpstreamProtocol::Http2
        );
        let message = error(&format!(
            "{}endpoint_protocol = \"http3\"\n",
            route(endpoints)
        ));
        assert!(message.contains("line 5"), "{message}");
        assert!(message.contains("endpoint_protocol"), "{message}");
        assert!(message.contains("http3"), "{message}");
    }

    #[test]
    fn endpoint_files_hold_lines_or_json() {
        let a = "10.0.0.7:80".parse().unwrap();
        let b = "[fd00::8]:80".parse().unwrap();
        for text in [
            "10.0.0.7:80\n[fd00::8]:80\n",
            "# pods\n\n  10.0.0.7:80  # first\n[fd00::8]:80",
            "[\"10.0.0.7:80\", \"[fd00::8]:80\"]",
            "{\"endpoints\": [\"10.0.0.7:80\", \"[fd00::8]:80\"]}",
        ] {
            assert_eq!(parse_endpoints_file(text).unwrap(), vec![a, b], "{text}");
        }
        for (text, problem) in [
            (
                "10.0.0.7:80\nten.0.0.8:80\n",
                "line 2: \"ten.0.0.8:80\" is not an IP:PORT address",
            ),
            (
                "[\"10.0.0.7:80\", \"x\"]",
                "entry 1: \"x\" is not an IP:PORT address",
            ),
            ("{\"pods\": []}", "not a JSON array"),
            ("# nothing yet\n", "lists no endpoint"),
            ("[]", "lists no endpoint"),
        ] {
            let error = parse_endpoints_file(text).unwrap_err();
            assert!(error.contains(problem), "{text}: {error}");
        }
    }

    #[test]
    fn fields_are_located_by_table_and_key() {
        let text = "[admin]\nlisten = \"127.0.0.1:1\"\n\n[[outbound]]\nname = \"a\"\n\n[[outbound]]\nname = \"b\"\nretry = { attempts = 0 }\n\n[outbound.breaker]\nfailure_rate = 2.0\n";
        assert_eq!(locate(text, "admin.listen"), Some(2));
        assert_eq!(locate(text, "outbound[1].name"), Some(8));
        assert_eq!(locate(text, "outbound[1].retry.attempts"), Some(9));
        assert_eq!(locate(text, "outbound[1].breaker.failure_rate"), Some(12));
        // A key left at its default: the enclosing table's header.
        assert_eq!(locate(text, "outbound[1].breaker.window"), Some(11));
        assert_eq!(locate(text, "inbound.listen"), None);
    }
}
