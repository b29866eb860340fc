//! Strict query strings: unknown parameters, repeated single values, broken percent-encoding
//! and broken UTF-8 are all `invalid_request` naming the parameter. What the server writes
//! into query strings is encoded by `strata_wire::query::encode`.

use crate::error::ApiError;

/// A parsed query string.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode(raw: &str, what: &str) -> Result<String, ApiError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let h = bytes.get(i + 1).copied().and_then(hex);
                let l = bytes.get(i + 2).copied().and_then(hex);
                match (h, l) {
                    (Some(h), Some(l)) => out.push(h * 16 + l),
                    _ => {
                        return Err(ApiError::invalid(
                            what.to_owned(),
                            "has a broken percent-encoding",
                        ))
                    }
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::invalid(what.to_owned(), "is not valid UTF-8"))
}

impl Query {
    /// Parses `raw`, refusing parameters not in `allowed`.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut pairs = Vec::new();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let k = decode(k, "query parameter name")?;
            if !allowed.contains(&k.as_str()) {
                let mut list = allowed.join(", ");
                if list.is_empty() {
                    list = "none".to_owned();
                }
                return Err(ApiError::invalid(
                    k.clone(),
                    format!("is not a parameter of this endpoint (allowed: {list})"),
                ));
            }
            let v = decode(v, &k)?;
            pairs.push((k, v));
        }
        if pairs.len() > 2 * strata_core::limits::FILTER_MAX_TERMS + 16 {
            return Err(ApiError::invalid("query", "has too many parameters"));
        }
        Ok(Query { pairs })
    }

    /// The single value of `name`; repeated is an error.
    pub fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut it = self.pairs.iter().filter(|(k, _)| k == name);
        let first = it.next().map(|(_, v)| v.as_str());
        if it.next().is_some() {
            return Err(ApiError::invalid(
                name.to_owned(),
                "is given more than once",
            ));
        }
        Ok(first)
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// `name` as an expected version: `any`, `no_stream`, `stream_exists` or a version;
    /// `default` when absent.
    pub fn expected(
        &self,
        name: &str,
        default: strata_core::ExpectedVersion,
    ) -> Result<strata_core::ExpectedVersion, ApiError> {
        let Some(v) = self.one(name)? else {
            return Ok(default);
        };
        if let Some(e) = strata_core::ExpectedVersion::from_name(v) {
            return Ok(e);
        }
        v.parse::<u64>()
            .map(strata_core::ExpectedVersion::Exact)
            .map_err(|_| {
                ApiError::invalid(
                    name.to_owned(),
                    format!("must be any, no_stream, stream_exists or a version, not {v:?}"),
                )
            })
    }

    /// `name` as `true` or `false`; `false` when absent.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.one(name)? {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(v) => Err(ApiError::invalid(
                name.to_owned(),
                format!("must be true or false, not {v:?}"),
            )),
        }
    }

    /// `name` as a number.
    pub fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.one(name)?
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::invalid(
                        name.to_owned(),
                        format!("must be a whole number from 0 to {}, not {v:?}", u64::MAX),
                    )
                })
            })
            .transpose()
    }

    /// A page size: default `default`, at most `max`.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.u64("limit")? {
            None => Ok(default),
            Some(n) if n == 0 || n > max as u64 => Err(ApiError::invalid(
                "limit",
                format!("must be between 1 and {max}, not {n}"),
            )),
            Some(n) => Ok(n as usize),
        }
    }

    /// A timestamp (RFC 3339).
    pub fn timestamp(&self, name: &str) -> Result<Option<strata_core::Timestamp>, ApiError> {
        self.one(name)?
            .map(|v| {
                chrono::DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|e| {
                        ApiError::invalid(
                            name.to_owned(),
                            format!("must be an RFC 3339 time such as 2026-01-01T00:00:00Z ({e})"),
                        )
                    })
            })
            .transpose()
    }

    /// A non-empty string value.
    pub fn nonempty(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.one(name)? {
            Some("") => Err(ApiError::invalid(name.to_owned(), "must not be empty")),
            v => Ok(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict() {
        let q = Query::parse(Some("a=1&b=x%20y&b=z+w"), &["a", "b"]).unwrap();
        assert_eq!(q.u64("a").unwrap(), Some(1));
        assert_eq!(q.all("b"), vec!["x y", "z w"]);
        assert!(q.one("b").is_err());
        assert!(Query::parse(Some("c=1"), &["a"]).is_err());
        assert!(Query::parse(Some("a=%ff"), &["a"]).is_err());
        assert!(Query::parse(Some("a=%f"), &["a"]).is_err());
        let odd = "a/b c$ü+%&=";
        assert_eq!(decode(&strata_wire::query::encode(odd), "x").unwrap(), odd);
    }
}
