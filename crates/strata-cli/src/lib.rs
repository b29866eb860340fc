//! The library side of the `strata` command: what other crates and the fuzz targets reach
//! without running the binary. Today that is `strata serve`'s configuration resolver.
//!
//! ```
//! use strata_cli::config::{resolve, Backend, Given};
//!
//! // `--database-url` on the command line; the environment names the address.
//! let given = Given {
//!     database_url: Some("postgres://127.0.0.1/strata".to_owned()),
//!     ..Given::default()
//! };
//! let env = |name: &str| (name == "STRATA_LISTEN").then(|| "127.0.0.1:8080".to_owned());
//! let resolved = resolve(&given, &env).unwrap();
//! assert_eq!(resolved.backend, Backend::Postgres("postgres://127.0.0.1/strata".into()));
//! assert_eq!(resolved.listen.port(), 8080);
//!
//! // A bad value is reported in a sentence that says where it came from.
//! let env = |name: &str| (name == "STRATA_LISTEN").then(|| "everywhere".to_owned());
//! let errors = resolve(&Given::default(), &env).unwrap_err();
//! assert!(errors[0].contains("STRATA_LISTEN"), "{errors:?}");
//! ```

#![forbid(unsafe_code)]

pub mod config;
