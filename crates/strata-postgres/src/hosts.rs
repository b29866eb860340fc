//! Several hosts in one URL, as libpq reads them:
//! `postgres://user@primary:5432,standby:5432/db?target_session_attrs=read-write`.
//!
//! sqlx 0.8 parses one host per URL (its URL parser rejects `h1:p1,h2:p2`) and has no
//! `target_session_attrs`, so the store does what libpq does itself: it tries the hosts in
//! order and takes the first that accepts a connection, and with `read-write` only one whose
//! sessions are not read-only (`SHOW transaction_read_only` is `off`, libpq's own check).
//!
//! After connecting, the store keeps following the writable host: when its `LISTEN`
//! connection (which always talks to the current host) is lost, or a new pool connection lands
//! on a read-only server, a monitor task tries the hosts again, in order, with backoff, and
//! points the pool's future connections at the first acceptable one. Connections to a dead
//! server fail their next statement and are dropped by the pool when they are returned.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;

use crate::error::{connect_error, ConnectError, Target};
use crate::limits;
use crate::store::Shared;

/// What a database URL names: one single-host URL per host, in order, and whether sessions
/// must accept writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostList {
    /// The URL once per host, with `target_session_attrs` removed (sqlx would warn about it).
    pub urls: Vec<String>,
    /// `target_session_attrs=read-write`.
    pub read_write: bool,
}

/// Splits `url`'s host list. A URL with one host comes back as it is (less
/// `target_session_attrs`), so sqlx reads it exactly as before.
pub(crate) fn split(url: &str) -> Result<HostList, ConnectError> {
    let invalid = |reason: &str| ConnectError::InvalidUrl {
        reason: reason.to_owned(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("it must start with postgres:// or postgresql://"))?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, host_list) = match authority.rfind('@') {
        Some(i) => authority.split_at(i + 1),
        None => ("", authority),
    };
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let mut read_write = false;
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        match pair.split_once('=') {
            Some(("target_session_attrs", value)) => {
                read_write = match value {
                    "any" => false,
                    "read-write" => true,
                    _ => {
                        return Err(invalid(
                            "target_session_attrs must be any or read-write (the others are not \
                             supported)",
                        ))
                    }
                }
            }
            Some(("host", value)) if value.contains(',') || value.contains("%2C") => {
                return Err(invalid(
                    "list several hosts in the URL's host part (postgres://user@host1:port1,host2:port2/db), not in host=",
                ))
            }
            _ => kept.push(pair),
        }
    }
    let query = match kept.is_empty() {
        true => String::new(),
        false => format!("?{}", kept.join("&")),
    };
    let hosts: Vec<&str> = host_list.split(',').collect();
    if hosts.len() > 1 && hosts.iter().any(|h| h.is_empty()) {
        return Err(invalid("the host list has an empty entry"));
    }
    if hosts.len() > limits::DATABASE_HOSTS_MAX {
        return Err(invalid("the URL names too many hosts"));
    }
    let urls = hosts
        .iter()
        .map(|h| format!("{scheme}://{userinfo}{h}{path}{query}"))
        .collect();
    Ok(HostList { urls, read_write })
}

/// The hosts a store may connect to, in the URL's order, each with the store's session
/// settings applied.
pub(crate) struct Hosts {
    /// One entry per host.
    pub candidates: Vec<PgConnectOptions>,
    /// Sessions must accept writes.
    pub read_write: bool,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// The database and user, to name them in errors.
    database: String,
    user: String,
}

impl Hosts {
    /// Parses `list` with sqlx, one host at a time, and applies `session` to each.
    pub(crate) fn new(
        list: &HostList,
        connect_timeout: Duration,
        session: impl Fn(PgConnectOptions) -> PgConnectOptions,
    ) -> Result<Hosts, ConnectError> {
        let mut candidates = Vec::with_capacity(list.urls.len());
        for url in &list.urls {
            let options =
                PgConnectOptions::from_str(url).map_err(|e| ConnectError::InvalidUrl {
                    reason: crate::error::first_line(&e.to_string()),
                })?;
            candidates.push(session(options));
        }
        let first = candidates.first().ok_or_else(|| ConnectError::InvalidUrl {
            reason: "the URL names no host".to_owned(),
        })?;
        Ok(Hosts {
            database: first
                .get_database()
                .unwrap_or(first.get_username())
                .to_owned(),
            user: first.get_username().to_owned(),
            candidates,
            read_write: list.read_write,
            connect_timeout,
        })
    }

    /// Where candidate `i` is, to name it in errors and logs.
    pub(crate) fn target(&self, i: usize) -> Target {
        let c = &self.candidates[i];
        Target {
            host: c.get_host().to_owned(),
            port: c.get_port(),
            database: self.database.clone(),
            user: self.user.clone(),
            timeout_ms: self.connect_timeout.as_millis() as u64,
        }
    }

    /// `host:port` of every candidate, comma-separated.
    fn names(&self) -> String {
        self.candidates
            .iter()
            .map(|c| format!("{}:{}", c.get_host(), c.get_port()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The first candidate, in order, that accepts a connection (and, with `read_write`, whose
    /// sessions are not read-only). When none does: [`ConnectError::NoReadWriteHost`] if some
    /// answered but were read-only, otherwise the first candidate's connection error.
    pub(crate) async fn find(&self) -> Result<usize, ConnectError> {
        let mut first_error = None;
        let mut read_only = false;
        for (i, candidate) in self.candidates.iter().enumerate() {
            let attempt =
                tokio::time::timeout(self.connect_timeout, PgConnection::connect_with(candidate))
                    .await;
            let mut conn = match attempt {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    first_error.get_or_insert_with(|| connect_error(&e, &self.target(i)));
                    continue;
                }
                Err(_) => {
                    first_error.get_or_insert_with(|| {
                        connect_error(&sqlx::Error::PoolTimedOut, &self.target(i))
                    });
                    continue;
                }
            };
            let accepted = match self.read_write {
                false => Ok(true),
                true => accepts_writes(&mut conn).await,
            };
            let _ = conn.close().await;
            match accepted {
                Ok(true) => return Ok(i),
                Ok(false) => read_only = true,
                Err(e) => {
                    first_error.get_or_insert_with(|| connect_error(&e, &self.target(i)));
                }
            }
        }
        match (read_only, first_error) {
            (true, _) | (false, None) => Err(ConnectError::NoReadWriteHost {
                hosts: self.names(),
            }),
            (false, Some(e)) => Err(e),
        }
    }
}

/// libpq's check for `target_session_attrs=read-write`.
pub(crate) async fn accepts_writes(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let read_only: String = sqlx::query_scalar("SHOW transaction_read_only")
        .fetch_one(conn)
        .await?;
    Ok(read_only == "off")
}

/// Follows the writable host: each time `shared.failover` is signalled, tries the hosts again
/// (with backoff until one is acceptable) and points the pool's new connections at it.
/// `current` is the candidate the pool was created with.
pub(crate) async fn monitor(shared: Arc<Shared>, hosts: Arc<Hosts>, mut current: usize) {
    let min = Duration::from_millis(limits::FAILOVER_PROBE_MIN_MS);
    let max = Duration::from_millis(limits::FAILOVER_PROBE_MAX_MS);
    loop {
        shared.failover.notified().await;
        let mut backoff = min;
        loop {
            match hosts.find().await {
                Ok(i) => {
                    if i != current {
                        let to = hosts.target(i);
                        tracing::warn!(
                            host = %to.host,
                            port = to.port,
                            "PostgreSQL: switching to another host of the URL"
                        );
                        shared.pool.set_connect_options(hosts.candidates[i].clone());
                        current = i;
                        shared.changes.send_modify(|v| *v = v.wrapping_add(1));
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "PostgreSQL: no host of the URL is usable yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(url: &str) -> Vec<String> {
        split(url).map(|l| l.urls).unwrap_or_default()
    }

    #[test]
    fn sqlx_alone_does_not_read_a_host_list() {
        // Why this module exists: if sqlx ever parses host lists, use its support instead.
        assert!(PgConnectOptions::from_str("postgres://u@h1:1,h2:2/db").is_err());
    }

    #[test]
    fn a_single_host_url_is_kept() {
        let url = "postgres://u:p@h:5433/db?sslmode=disable";
        assert_eq!(
            split(url),
            Ok(HostList {
                urls: vec![url.to_owned()],
                read_write: false
            })
        );
        assert_eq!(urls("postgres://h"), vec!["postgres://h".to_owned()]);
    }

    #[test]
    fn a_host_list_gives_one_url_per_host() {
        let list = split(
            "postgres://u:p@a:1,[::1]:2,c/db?sslmode=disable&target_session_attrs=read-write",
        )
        .unwrap();
        assert!(list.read_write);
        assert_eq!(
            list.urls,
            vec![
                "postgres://u:p@a:1/db?sslmode=disable",
                "postgres://u:p@[::1]:2/db?sslmode=disable",
                "postgres://u:p@c/db?sslmode=disable",
            ]
        );
        let hosts = Hosts::new(&list, Duration::from_secs(1), |o| o).unwrap();
        let where_: Vec<(String, u16)> = (0..3)
            .map(|i| (hosts.target(i).host, hosts.target(i).port))
            .collect();
        assert_eq!(where_[0], ("a".to_owned(), 1));
        assert_eq!(where_[1].1, 2);
        assert_eq!(where_[2], ("c".to_owned(), 5432));
        assert_eq!(hosts.target(1).database, "db");
    }

    #[test]
    fn bad_host_lists_are_invalid() {
        for url in [
            "postgres://a,,b/db",
            "postgres://a,b/db?target_session_attrs=standby",
            "postgres:///db?host=a,b",
            "no-scheme",
        ] {
            assert!(
                matches!(split(url), Err(ConnectError::InvalidUrl { .. })),
                "{url}"
            );
        }
        let many = ["h"; limits::DATABASE_HOSTS_MAX + 1].join(",");
        assert!(split(&format!("postgres://{many}/db")).is_err());
    }
}
