//! `strata serve`'s configuration: defaults, then a TOML file, then `STRATA_*` environment
//! variables, then flags, resolved into one value and validated at start. Every bad value is
//! reported, each in a sentence naming where it came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use strata_server::{ServerConfig, TlsFiles, TokenConfig};

/// The address `strata serve` listens on by default: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2113";
/// The embedded store's default data directory.
pub const DEFAULT_DATA: &str = "./strata-data";
/// The projections `strata serve` hosts unless told otherwise.
pub const DEFAULT_PROJECTIONS: &[&str] = &[strata::projection::EventTypeCounts::NAME];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data: Option<PathBuf>,
    database_url: Option<String>,
    tls: Option<TlsSection>,
    limits: Option<LimitsSection>,
    #[serde(default)]
    tokens: Vec<TokenConfig>,
    projections: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    request_body_max_bytes: Option<u64>,
    page_max_events: Option<u32>,
    subscriptions_per_token_max: Option<u32>,
    sse_buffer_events: Option<u32>,
    sse_keep_alive_interval_ms: Option<u64>,
    sse_slow_subscriber_timeout_ms: Option<u64>,
    header_read_timeout_ms: Option<u64>,
    keep_alive_idle_timeout_ms: Option<u64>,
    connections_max: Option<u32>,
    request_bodies_in_flight_max_bytes: Option<u64>,
    request_body_read_timeout_ms: Option<u64>,
    sse_buffer_max_bytes: Option<u64>,
    sse_buffers_total_max_bytes: Option<u64>,
    sse_fan_out_max_bytes: Option<u64>,
}

/// Where the events live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The embedded log in this directory.
    Embedded(PathBuf),
    /// PostgreSQL at this URL.
    Postgres(String),
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// Where the events live.
    pub backend: Backend,
    /// The TLS certificate and key, when serving HTTPS.
    pub tls: Option<TlsFiles>,
    /// The server's own settings (limits, tokens).
    pub server: ServerConfig,
    /// The built-in projections to host.
    pub projections: Vec<String>,
}

/// What the command line gave (flags, or the variables clap reads for the global flags).
#[derive(Debug, Default, Clone)]
pub struct Given {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `--listen ADDR`.
    pub listen: Option<String>,
    /// `--data DIR`.
    pub data: Option<PathBuf>,
    /// `--database-url URL`.
    pub database_url: Option<String>,
    /// `--tls-cert-file FILE`.
    pub tls_cert_file: Option<PathBuf>,
    /// `--tls-key-file FILE`.
    pub tls_key_file: Option<PathBuf>,
    /// `--projection NAME` (repeatable); `Some(empty)` for `--no-projections`.
    pub projections: Option<Vec<String>>,
}

/// Resolves and validates; `env` reads an environment variable.
pub fn resolve(
    given: &Given,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved, Vec<String>> {
    let mut errors = Vec::new();
    let file_path = given
        .config_file
        .clone()
        .or_else(|| env("STRATA_CONFIG").map(PathBuf::from));
    let file = match &file_path {
        None => FileConfig::default(),
        Some(p) => match read_file(p) {
            Ok(f) => f,
            Err(e) => return Err(vec![e]),
        },
    };
    let from_file = |key: &str| match &file_path {
        Some(p) => format!("{key} in {}", p.display()),
        None => key.to_owned(),
    };

    // listen: flag, env, file, default.
    let (listen_raw, listen_src) = match (&given.listen, env("STRATA_LISTEN"), &file.listen) {
        (Some(v), _, _) => (v.clone(), "--listen".to_owned()),
        (None, Some(v), _) => (v, "STRATA_LISTEN".to_owned()),
        (None, None, Some(v)) => (v.clone(), from_file("listen")),
        (None, None, None) => (DEFAULT_LISTEN.to_owned(), "the default".to_owned()),
    };
    let listen = match listen_raw.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(format!(
                "{listen_src} is {listen_raw:?}: it must be an IP address and port such as 127.0.0.1:2113 or [::1]:2113"
            ));
            None
        }
    };

    // The backend: --database-url / STRATA_DATABASE_URL (clap reads both), the file, or data.
    let database_url = given.database_url.clone().or(file.database_url.clone());
    let data = given.data.clone().or(file.data.clone());
    let backend = match (database_url, data) {
        (Some(_), Some(d)) if given.data.is_some() || file.data.is_some() => {
            errors.push(format!(
                "both a database URL and a data directory ({}) are configured: choose one",
                d.display()
            ));
            None
        }
        (Some(url), _) => {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                errors.push(
                    "the database URL must start with postgres:// or postgresql://".to_owned(),
                );
            }
            Some(Backend::Postgres(url))
        }
        (None, d) => Some(Backend::Embedded(
            d.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA)),
        )),
    };

    // TLS.
    let tls_file = file.tls.unwrap_or_default();
    let pick = |flag: &Option<PathBuf>, var: &str, f: &Option<PathBuf>| {
        flag.clone()
            .or_else(|| env(var).map(PathBuf::from))
            .or(f.clone())
    };
    let cert = pick(
        &given.tls_cert_file,
        "STRATA_TLS_CERT_FILE",
        &tls_file.cert_file,
    );
    let key = pick(
        &given.tls_key_file,
        "STRATA_TLS_KEY_FILE",
        &tls_file.key_file,
    );
    let tls = match (cert, key) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            for (what, p) in [("TLS certificate", &c), ("TLS key", &k)] {
                if !p.is_file() {
                    errors.push(format!("the {what} file {} does not exist", p.display()));
                }
            }
            Some(TlsFiles {
                cert_file: c,
                key_file: k,
            })
        }
        (Some(_), None) | (None, Some(_)) => {
            errors.push(
                "TLS needs both a certificate and a key file (--tls-cert-file and --tls-key-file)"
                    .to_owned(),
            );
            None
        }
    };

    // Limits: env over file over defaults.
    let mut server = ServerConfig::default();
    let l = file.limits.unwrap_or_default();
    macro_rules! limit {
        ($field:ident, $var:literal, $ty:ty) => {
            match env($var) {
                Some(v) => match v.trim().parse::<$ty>() {
                    Ok(n) => server.$field = n,
                    Err(_) => errors.push(format!("{} is {v:?}: it must be a whole number", $var)),
                },
                None => {
                    if let Some(n) = l.$field {
                        server.$field = n;
                    }
                }
            }
        };
    }
    limit!(request_body_max_bytes, "STRATA_REQUEST_BODY_MAX_BYTES", u64);
    limit!(page_max_events, "STRATA_PAGE_MAX_EVENTS", u32);
    limit!(
        subscriptions_per_token_max,
        "STRATA_SUBSCRIPTIONS_PER_TOKEN_MAX",
        u32
    );
    limit!(sse_buffer_events, "STRATA_SSE_BUFFER_EVENTS", u32);
    limit!(
        sse_keep_alive_interval_ms,
        "STRATA_SSE_KEEP_ALIVE_INTERVAL_MS",
        u64
    );
    limit!(
        sse_slow_subscriber_timeout_ms,
        "STRATA_SSE_SLOW_SUBSCRIBER_TIMEOUT_MS",
        u64
    );
    limit!(header_read_timeout_ms, "STRATA_HEADER_READ_TIMEOUT_MS", u64);
    limit!(
        keep_alive_idle_timeout_ms,
        "STRATA_KEEP_ALIVE_IDLE_TIMEOUT_MS",
        u64
    );
    limit!(connections_max, "STRATA_CONNECTIONS_MAX", u32);
    limit!(
        request_bodies_in_flight_max_bytes,
        "STRATA_REQUEST_BODIES_IN_FLIGHT_MAX_BYTES",
        u64
    );
    limit!(
        request_body_read_timeout_ms,
        "STRATA_REQUEST_BODY_READ_TIMEOUT_MS",
        u64
    );
    limit!(sse_buffer_max_bytes, "STRATA_SSE_BUFFER_MAX_BYTES", u64);
    limit!(
        sse_buffers_total_max_bytes,
        "STRATA_SSE_BUFFERS_TOTAL_MAX_BYTES",
        u64
    );
    limit!(sse_fan_out_max_bytes, "STRATA_SSE_FAN_OUT_MAX_BYTES", u64);
    server.tokens = file.tokens;
    if let Err(es) = server.validate() {
        errors.extend(es.problems().iter().map(|e| match &file_path {
            Some(_) => format!(
                "{} (limits and tokens come from the file and STRATA_* variables)",
                e
            ),
            None => e.to_string(),
        }));
    }

    // Projections: flags, env (comma-separated), file, default.
    let (projections, projections_src) = match (
        &given.projections,
        env("STRATA_PROJECTIONS"),
        &file.projections,
    ) {
        (Some(v), _, _) => (v.clone(), "--projection".to_owned()),
        (None, Some(v), _) => (
            v.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            "STRATA_PROJECTIONS".to_owned(),
        ),
        (None, None, Some(v)) => (v.clone(), from_file("projections")),
        (None, None, None) => (
            DEFAULT_PROJECTIONS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
            "the default".to_owned(),
        ),
    };
    for p in &projections {
        if !strata::projection::BUILTIN_PROJECTIONS.contains(&p.as_str()) {
            errors.push(format!(
                "{projections_src} names the projection {p:?}: strata serve hosts the built-in {} (an application hosts its own by embedding strata-server)",
                strata::projection::BUILTIN_PROJECTIONS.join(", ")
            ));
        }
    }

    // Loopback only without credentials.
    if let Some(addr) = listen {
        if !addr.ip().is_loopback() && server.tokens.is_empty() {
            errors.push(format!(
                "refusing to listen on {addr} ({listen_src}) without API tokens: anyone who can reach it could read and write every stream. Configure [[tokens]] in a --config file (`strata token new` prints one), or listen on 127.0.0.1"
            ));
        }
    }

    match (errors.is_empty(), listen, backend) {
        (true, Some(listen), Some(backend)) => Ok(Resolved {
            listen,
            backend,
            tls,
            server,
            projections,
        }),
        _ => Err(errors),
    }
}

fn read_file(p: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| format!("cannot read the config file {}: {e}", p.display()))?;
    toml::from_str(&text).map_err(|e| format!("the config file {} is not valid: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_are_loopback_and_embedded() {
        let r = resolve(&Given::default(), &no_env).unwrap();
        assert_eq!(r.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(r.backend, Backend::Embedded(PathBuf::from(DEFAULT_DATA)));
        assert!(r.tls.is_none());
        assert_eq!(r.projections, vec!["event-type-counts".to_owned()]);
    }

    #[test]
    fn projections_come_from_flags_env_or_file_and_must_be_known() {
        let none = Given {
            projections: Some(Vec::new()),
            ..Given::default()
        };
        assert!(resolve(&none, &no_env).unwrap().projections.is_empty());
        let env = |k: &str| (k == "STRATA_PROJECTIONS").then(|| "".to_owned());
        assert!(resolve(&Given::default(), &env)
            .unwrap()
            .projections
            .is_empty());
        let env = |k: &str| (k == "STRATA_PROJECTIONS").then(|| "balances".to_owned());
        let errors = resolve(&Given::default(), &env).unwrap_err();
        assert!(
            errors[0].contains("STRATA_PROJECTIONS names the projection \"balances\""),
            "{errors:?}"
        );
    }

    #[test]
    fn every_bad_value_is_named() {
        let env = |k: &str| match k {
            "STRATA_LISTEN" => Some("0.0.0.0:99999".to_owned()),
            "STRATA_PAGE_MAX_EVENTS" => Some("many".to_owned()),
            "STRATA_SSE_BUFFER_EVENTS" => Some("0".to_owned()),
            "STRATA_CONNECTIONS_MAX" => Some("0".to_owned()),
            _ => None,
        };
        let given = Given {
            tls_cert_file: Some(PathBuf::from("/nonexistent.pem")),
            ..Given::default()
        };
        let errors = resolve(&given, &env).unwrap_err();
        let all = errors.join("\n");
        assert!(all.contains("STRATA_LISTEN is \"0.0.0.0:99999\""), "{all}");
        assert!(all.contains("STRATA_PAGE_MAX_EVENTS"), "{all}");
        assert!(all.contains("sse_buffer_events is 0"), "{all}");
        assert!(all.contains("connections_max is 0"), "{all}");
        assert!(all.contains("TLS needs both"), "{all}");
    }

    #[test]
    fn non_loopback_needs_tokens() {
        let given = Given {
            listen: Some("0.0.0.0:2113".to_owned()),
            ..Given::default()
        };
        let errors = resolve(&given, &no_env).unwrap_err();
        assert!(
            errors[0].contains("refusing to listen on 0.0.0.0:2113"),
            "{errors:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("strata.toml");
        std::fs::write(
            &file,
            format!(
                "listen = \"0.0.0.0:2113\"\n[limits]\npage_max_events = 50\nconnections_max = 99\nheader_read_timeout_ms = 2000\n[[tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nrole = \"admin\"\n",
                strata_server::hash_token("t")
            ),
        )
        .unwrap();
        let given = Given {
            config_file: Some(file.clone()),
            ..Given::default()
        };
        let r = resolve(&given, &no_env).unwrap();
        assert_eq!(r.listen.to_string(), "0.0.0.0:2113");
        assert_eq!(r.server.page_max_events, 50);
        assert_eq!(r.server.connections_max, 99);
        assert_eq!(r.server.header_read_timeout_ms, 2000);
        // Flags win over the environment, which wins over the file.
        let env = |k: &str| (k == "STRATA_LISTEN").then(|| "127.0.0.1:1".to_owned());
        let r = resolve(&given, &env).unwrap();
        assert_eq!(r.listen.to_string(), "127.0.0.1:1");
        let flagged = Given {
            listen: Some("127.0.0.1:2".to_owned()),
            ..given.clone()
        };
        assert_eq!(
            resolve(&flagged, &env).unwrap().listen.to_string(),
            "127.0.0.1:2"
        );
        std::fs::write(&file, "lisen = 1\n").unwrap();
        let errors = resolve(&given, &no_env).unwrap_err();
        assert!(errors[0].contains("unknown field `lisen`"), "{errors:?}");
    }
}
