//! API tokens (stored as SHA-256), roles and stream-prefix permissions.
//!
//! The rule, checked on every endpoint:
//! - a stream (read, info, append, subscribe) needs a grant of the action whose prefix starts
//!   the stream id;
//! - `$all` (read or subscribe) needs a grant of the action on every stream (prefix `""`), or a
//!   `prefix` filter in the request that starts with a granted prefix, so that every event
//!   returned is in a stream the token may see; category and event-type filters alone never
//!   widen access;
//! - a category (subscribe) needs a grant whose prefix starts the category name (it then covers
//!   every stream of the category), or exactly `<category>-`, in which case the server narrows
//!   the subscription to streams starting with `<category>-`;
//! - listing streams needs read on every stream or a `prefix` parameter starting with a granted
//!   prefix; listing categories, the head and position look-ups need read on every stream;
//! - `/metrics` needs the admin role; `/health`, `/ready` and `/openapi.json` are open.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::{Action, Role, ServerConfig};
use crate::error::{ApiError, ErrorCode};

/// The SHA-256 of a token, as 64 lower-case hex digits: what the configuration stores.
///
/// ```
/// let h = strata_server::hash_token("abc");
/// assert_eq!(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
/// ```
pub fn hash_token(token: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// A new random token: `strata_` and 256 bits from the OS, base64url.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "strata_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

#[derive(Debug, Clone)]
struct Grant {
    prefix: String,
    read: bool,
    write: bool,
    subscribe: bool,
}

impl Grant {
    fn allows(&self, action: Action) -> bool {
        match action {
            Action::Read => self.read,
            Action::Write => self.write,
            Action::Subscribe => self.subscribe,
        }
    }
}

/// Who is calling, with what rights.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's name (`anonymous` without authentication).
    pub name: String,
    /// A key identifying the token (its hash), for per-token limits.
    pub key: String,
    admin: bool,
    grants: Vec<Grant>,
}

impl Principal {
    fn anonymous() -> Self {
        Principal {
            name: "anonymous".to_owned(),
            key: "anonymous".to_owned(),
            admin: true,
            grants: vec![Grant {
                prefix: String::new(),
                read: true,
                write: true,
                subscribe: true,
            }],
        }
    }

    /// Whether the principal has the admin role.
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// Whether `action` is allowed on the stream `stream_id`. A metastream (`$$account-1`)
    /// has the rights of the stream it describes: who may write a stream may delete it.
    pub fn can(&self, action: Action, stream_id: &str) -> bool {
        let stream_id = stream_id
            .strip_prefix(strata_core::METASTREAM_PREFIX)
            .unwrap_or(stream_id);
        self.grants
            .iter()
            .any(|g| g.allows(action) && stream_id.starts_with(&g.prefix))
    }

    /// Whether `action` is allowed on some stream prefix.
    pub fn has_any(&self, action: Action) -> bool {
        self.grants.iter().any(|g| g.allows(action))
    }

    /// Whether `action` is allowed on `$all` read with the stream-prefix filter `prefix`.
    pub fn can_all(&self, action: Action, prefix: Option<&str>) -> bool {
        self.grants.iter().any(|g| {
            g.allows(action)
                && (g.prefix.is_empty() || prefix.is_some_and(|p| p.starts_with(&g.prefix)))
        })
    }

    /// Whether `action` is allowed on every stream of `category`: `Some(None)` when a grant
    /// covers the whole category, `Some(Some(prefix))` when only `<category>-` is granted (the
    /// read must then be narrowed to that prefix), `None` when not allowed.
    pub fn can_category(&self, action: Action, category: &str) -> Option<Option<String>> {
        let dashed = format!("{category}-");
        let mut narrowed = None;
        for g in self.grants.iter().filter(|g| g.allows(action)) {
            if category.starts_with(&g.prefix) {
                return Some(None);
            }
            if g.prefix == dashed {
                narrowed = Some(Some(dashed.clone()));
            }
        }
        narrowed
    }
}

/// The known tokens, by hash.
#[derive(Debug)]
pub struct Auth {
    tokens: HashMap<String, Arc<Principal>>,
    anonymous: Arc<Principal>,
}

impl Auth {
    /// Builds the table from the configuration.
    pub fn new(config: &ServerConfig) -> Self {
        let mut tokens = HashMap::new();
        for t in &config.tokens {
            let (read, write, subscribe) = match t.role {
                Role::Reader => (true, false, true),
                Role::Writer | Role::Admin => (true, true, true),
            };
            let mut grants: Vec<Grant> = if t.role == Role::Admin {
                vec![Grant {
                    prefix: String::new(),
                    read,
                    write,
                    subscribe,
                }]
            } else {
                t.prefixes
                    .iter()
                    .map(|p| Grant {
                        prefix: p.clone(),
                        read,
                        write,
                        subscribe,
                    })
                    .collect()
            };
            for g in &t.grants {
                grants.push(Grant {
                    prefix: g.prefix.clone(),
                    read: g.actions.contains(&Action::Read),
                    write: g.actions.contains(&Action::Write),
                    subscribe: g.actions.contains(&Action::Subscribe),
                });
            }
            tokens.insert(
                t.sha256.clone(),
                Arc::new(Principal {
                    name: t.name.clone(),
                    key: t.sha256.clone(),
                    admin: t.role == Role::Admin,
                    grants,
                }),
            );
        }
        Auth {
            tokens,
            anonymous: Arc::new(Principal::anonymous()),
        }
    }

    /// Who sent these headers: `unauthorized` without a known bearer token (when tokens are
    /// configured).
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Principal>, ApiError> {
        if self.tokens.is_empty() {
            return Ok(self.anonymous.clone());
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "this server needs an API token: send `Authorization: Bearer <token>`",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthorized,
                    "the Authorization header must be `Bearer <token>`",
                )
            })?;
        self.authenticate_token(token)
    }

    /// Who holds `token` (given outside a header, as `access_token`): `unauthorized` when it
    /// is not known. Any string is looked up, as any string can be a configured token.
    pub fn authenticate_token(&self, token: &str) -> Result<Arc<Principal>, ApiError> {
        if self.tokens.is_empty() {
            return Ok(self.anonymous.clone());
        }
        self.tokens
            .get(&hash_token(token.trim()))
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "the API token is not known"))
    }
}

/// `forbidden` for `action` on `what`.
pub fn forbidden(principal: &Principal, action: Action, what: &str) -> ApiError {
    let verb = match action {
        Action::Read => "read",
        Action::Write => "append to",
        Action::Subscribe => "subscribe to",
    };
    ApiError::new(
        ErrorCode::Forbidden,
        format!("token {:?} may not {verb} {what}", principal.name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;

    #[test]
    fn category_rule() {
        let cfg = ServerConfig {
            tokens: vec![
                TokenConfig::new("a", &hash_token("a"), Role::Reader).with_prefixes(["account-"])
            ],
            ..ServerConfig::default()
        };
        let auth = Auth::new(&cfg);
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer a".parse().unwrap());
        let p = auth.authenticate(&h).unwrap();
        assert_eq!(
            p.can_category(Action::Read, "account"),
            Some(Some("account-".to_owned()))
        );
        assert_eq!(p.can_category(Action::Read, "accounts"), None);
        assert!(p.can(Action::Read, "account-1"));
        assert!(!p.can(Action::Read, "account"));
        assert!(!p.can(Action::Write, "account-1"));
        assert!(!p.can_all(Action::Read, None));
        assert!(p.can_all(Action::Read, Some("account-12")));
        assert!(!p.can_all(Action::Read, Some("acc")));
        assert!(new_token().len() > 40);
    }
}
