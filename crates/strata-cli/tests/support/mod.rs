//! What the CLI's integration tests share: the binary, a running `strata serve`, and a run of
//! a client command. Each test file uses some of it.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use sqlx::Connection;

/// The `strata` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// A `strata serve` process, killed when dropped unless [`Server::stop`] stopped it.
pub struct Server {
    /// `None` once stopped.
    child: Option<Child>,
    /// Where it serves, as it said (`http://…` or `https://…`).
    pub url: String,
}

impl Server {
    /// Starts `command` (a `strata … serve`) and waits for the line that says where it serves.
    pub fn spawn(mut command: Command) -> Server {
        let mut child = command
            .env("STRATA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_owned();
        Server {
            child: Some(child),
            url,
        }
    }

    /// Stops it as Ctrl-C does (SIGINT) and checks that it exits cleanly, within
    /// `SERVER_STOP_MAX_S`: a server that hangs or fails on the way out fails the test.
    pub fn stop(mut self) {
        const SERVER_STOP_MAX_S: u64 = 60;
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(sent.success(), "kill -INT {pid} failed");
        let (exited, status) = std::sync::mpsc::channel();
        std::thread::spawn(move || exited.send(child.wait()));
        match status.recv_timeout(std::time::Duration::from_secs(SERVER_STOP_MAX_S)) {
            Ok(status) => {
                let status = status.unwrap();
                assert!(
                    status.success(),
                    "strata serve exited with {status} after SIGINT"
                );
            }
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                panic!("strata serve did not stop within {SERVER_STOP_MAX_S} s of SIGINT");
            }
        }
    }

    /// Its address, without the scheme.
    pub fn addr(&self) -> &str {
        self.url
            .strip_prefix("http://")
            .or_else(|| self.url.strip_prefix("https://"))
            .unwrap_or(&self.url)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the binary with `args`, none of its client settings taken from the environment:
/// (success, stdout, stderr).
/// How many files of `segments/` in the data directory `data` end in `.EXT`.
pub fn segment_files(data: &std::path::Path, ext: &str) -> u64 {
    std::fs::read_dir(data.join("segments"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == ext)
        })
        .count() as u64
}

pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("STRATA_SERVER")
        .env_remove("STRATA_DATA")
        .env_remove("STRATA_TOKEN")
        .env_remove("STRATA_DATABASE_URL")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The PostgreSQL the tests use: `STRATA_TEST_DATABASE_URL`, or this machine's.
pub fn test_url() -> String {
    std::env::var("STRATA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// `url` with its database replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    format!("{base}/{database}{query}")
}

/// A database of this test run's own, dropped (with its connections) when this is dropped.
pub struct Database {
    admin_url: String,
    name: String,
}

impl Database {
    /// Creates a fresh database; `None` (after saying "SKIPPING") when PostgreSQL is not
    /// reachable, except under CI (`CI` set), where that fails the test. `what` names the test.
    pub async fn create(what: &str) -> Option<Database> {
        let admin_url = test_url();
        let mut conn = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("{what} needs PostgreSQL at {admin_url}: {e}")
            }
            Err(e) => {
                let message = format!(
                    "SKIPPING {what}: PostgreSQL at {admin_url}: {e} (set \
                     STRATA_TEST_DATABASE_URL; under CI this is a failure)\n"
                );
                let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
                return None;
            }
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("t_cli_{}_{nanos}", std::process::id());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        Some(Database { admin_url, name })
    }

    /// Its URL.
    pub fn url(&self) -> String {
        with_database(&self.admin_url, &self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Dropped on a plain thread: this may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
