//! `strata read`: a stream, or `$all`, a page at a time; optionally as it was at a time.

use anyhow::Result;
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use clap::Args;
use strata_core::{Position, ReadAllOptions, ReadError, ReadStreamOptions};

use super::{stream_arg, FilterArgs};
use crate::cli::Cli;
use crate::output::Printer;

#[derive(Args)]
pub struct ReadArgs {
    /// A stream, or `$all` for the global order (in single quotes, so that the shell leaves
    /// the `$` alone).
    stream: String,
    /// Start at this version (a stream) or position (`$all`), inclusive.
    #[arg(long)]
    from: Option<u64>,
    /// Newest first.
    #[arg(long)]
    backward: bool,
    /// Most events to print (at least 1).
    #[arg(long, default_value_t = 100, value_parser = at_least_one)]
    limit: usize,
    /// Show history as it was at this time: RFC 3339 (2026-01-01T00:00:00Z,
    /// 2026-01-01T09:30:00+01:00), a date and time with a zone (2026-01-01 09:30 +01:00), a
    /// date (2026-01-01: its first instant, UTC; 2026-01-01 +01:00: its first instant at that
    /// offset), today, yesterday (UTC days), now, or a time ago (90m ago, 2h ago, 3d ago, 1w
    /// ago). It says which instant it used.
    #[arg(long, value_name = "TIME")]
    as_of: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (0 would print nothing)".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("must be a whole number from 1 up, not {s:?}")),
    }
}

/// How an `--as-of` was understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsOf {
    /// The instant.
    pub at: DateTime<Utc>,
    /// How it was read, when that is not plain from the instant (a date, a time ago).
    pub read_as: Option<String>,
}

/// Reads an `--as-of`; `now` is the current time, for the relative forms.
pub fn parse_as_of(s: &str, now: DateTime<Utc>) -> Result<AsOf, String> {
    let t = s.trim();
    let plain = |at: DateTime<Utc>| AsOf { at, read_as: None };
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Ok(plain(at.with_timezone(&Utc)));
    }
    // `Z` (UTC) where RFC 3339 would not take the rest (no seconds, a space for the T).
    let zoned = match t.strip_suffix(['Z', 'z']) {
        Some(rest) => format!("{rest}+00:00"),
        None => t.to_owned(),
    };
    for f in [
        "%Y-%m-%d %H:%M:%S%.f %:z",
        "%Y-%m-%d %H:%M %:z",
        "%Y-%m-%dT%H:%M %:z",
        "%Y-%m-%dT%H:%M%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M%:z",
        "%Y-%m-%d %H:%M:%S%.f %z",
        "%Y-%m-%d %H:%M %z",
    ] {
        if let Ok(at) = DateTime::parse_from_str(&zoned, f) {
            return Ok(plain(at.with_timezone(&Utc)));
        }
    }
    let day_start = |d: NaiveDate, what: String| AsOf {
        at: d.and_hms_opt(0, 0, 0).map_or(now, |n| n.and_utc()),
        read_as: Some(what),
    };
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(day_start(d, format!("the start of {d}, UTC")));
    }
    // A date in a zone: the start of that day there (2026-01-01 +01:00).
    if let Some((date, offset)) = zoned.split_once(' ') {
        if NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok() {
            let midnight = format!("{date} 00:00 {}", offset.trim());
            for f in ["%Y-%m-%d %H:%M %:z", "%Y-%m-%d %H:%M %z"] {
                if let Ok(at) = DateTime::parse_from_str(&midnight, f) {
                    return Ok(AsOf {
                        at: at.with_timezone(&Utc),
                        read_as: Some(format!("the start of {date} at {}", at.offset())),
                    });
                }
            }
        }
    }
    match t {
        "now" => return Ok(plain(now)),
        "today" => {
            let d = now.date_naive();
            return Ok(day_start(d, format!("today: the start of {d}, UTC")));
        }
        "yesterday" => {
            let d = now.date_naive() - Duration::days(1);
            return Ok(day_start(d, format!("yesterday: the start of {d}, UTC")));
        }
        _ => {}
    }
    if let Some(ago) = t.strip_suffix("ago") {
        let ago = ago.trim();
        let split = ago.find(|c: char| !c.is_ascii_digit()).unwrap_or(ago.len());
        let (n, unit) = ago.split_at(split);
        let n: i64 = n
            .parse()
            .map_err(|_| format!("{s:?}: a time ago is a number and a unit, such as 2h ago"))?;
        let unit_seconds = match unit.trim() {
            "s" | "sec" | "second" | "seconds" => 1,
            "m" | "min" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3_600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 7 * 86_400,
            other => {
                return Err(format!(
                    "{s:?}: the unit {other:?} is not one of s, m, h, d, w (months and years have no fixed length)"
                ))
            }
        };
        let back = n
            .checked_mul(unit_seconds)
            .and_then(Duration::try_seconds)
            .ok_or_else(|| format!("{s:?} is too long ago"))?;
        let at = now
            .checked_sub_signed(back)
            .ok_or_else(|| format!("{s:?} is too long ago"))?;
        return Ok(AsOf {
            at,
            read_as: Some(format!(
                "{t} from {}",
                now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
        });
    }
    if NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
        || NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f").is_ok()
        || NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M").is_ok()
        || NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M").is_ok()
    {
        return Err(format!(
            "{s:?} has no time zone: add Z for UTC or an offset such as +01:00 (2026-01-01T09:30:00+01:00)"
        ));
    }
    Err(format!(
        "{s:?} is not a time: give RFC 3339 (2026-01-01T00:00:00Z), a date (2026-01-01), today, yesterday, now, or a time ago (2h ago)"
    ))
}

/// The hint for a stream argument that was meant to be `$all`.
fn all_hint(stream: &str) -> Option<&'static str> {
    match stream {
        "all" | "$" | "" => Some(
            "to read the global order, give '$all' (in single quotes, so that the shell leaves the $ alone)",
        ),
        _ => None,
    }
}

pub async fn run(cli: &Cli, a: &ReadArgs, p: &Printer) -> Result<()> {
    if a.stream.is_empty() {
        anyhow::bail!("the stream is empty: {}", all_hint("").unwrap_or_default());
    }
    let as_of = match &a.as_of {
        Some(s) => Some(parse_as_of(s, Utc::now()).map_err(|e| anyhow::anyhow!("--as-of {e}"))?),
        None => None,
    };
    let store = cli.open().await?;
    let max_position = match &as_of {
        Some(AsOf { at, read_as }) => {
            let instant = at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            // On stderr, so that the events (or their JSON) stay the only output.
            match read_as {
                Some(how) => eprintln!("as of {instant} ({how})"),
                None => eprintln!("as of {instant}"),
            }
            match store.position_at(*at).await? {
                Some(p) => Some(p),
                None => {
                    p.note(&format!("nothing was recorded at or before {instant}"));
                    return Ok(());
                }
            }
        }
        None => None,
    };
    if a.stream == "$all" {
        let mut o = if a.backward {
            ReadAllOptions::backward()
        } else {
            ReadAllOptions::forward()
        }
        .limit(a.limit)
        .filter(a.filter.filter());
        if let Some(f) = a.from {
            o = o.from(Position(f));
        }
        if let Some(m) = max_position {
            o = o.max_position(m);
        }
        let page = store.read_all(o).await?;
        for e in &page.events {
            p.event(e);
        }
        if !page.is_end {
            if let Some(n) = page.next {
                p.note(&format!("more: --from {n}"));
            }
        }
    } else {
        let stream = stream_arg(&a.stream)?;
        let mut o = if a.backward {
            ReadStreamOptions::backward()
        } else {
            ReadStreamOptions::forward()
        }
        .limit(a.limit);
        if let Some(f) = a.from {
            o = o.from_version(f);
        }
        if let Some(m) = max_position {
            o = o.max_position(m);
        }
        let events = match store.read_stream(&stream, o).await {
            Err(e @ ReadError::StreamNotFound(_)) => match all_hint(&a.stream) {
                Some(hint) => anyhow::bail!("{e}; {hint}"),
                None => return Err(e.into()),
            },
            other => other?,
        };
        for e in events {
            p.event(&e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn as_of_takes_dates_zones_and_times_ago() {
        let now = at("2026-12-03T14:05:00Z");
        let parse = |s: &str| parse_as_of(s, now).unwrap();
        assert_eq!(parse("2026-01-01T00:00:00Z").at, at("2026-01-01T00:00:00Z"));
        assert_eq!(parse("2026-01-01T00:00:00Z").read_as, None);
        let date = parse("2026-12-02");
        assert_eq!(date.at, at("2026-12-02T00:00:00Z"));
        assert_eq!(
            date.read_as.as_deref(),
            Some("the start of 2026-12-02, UTC")
        );
        assert_eq!(
            parse("2026-01-01 09:30 +01:00").at,
            at("2026-01-01T08:30:00Z")
        );
        assert_eq!(
            parse("2026-01-01 09:30:15 -0500").at,
            at("2026-01-01T14:30:15Z")
        );
        assert_eq!(
            parse("2026-01-01T09:30:00+01:00").at,
            at("2026-01-01T08:30:00Z")
        );
        // Z for UTC also where RFC 3339 would want seconds or a T.
        assert_eq!(parse("2026-01-01T09:30Z").at, at("2026-01-01T09:30:00Z"));
        assert_eq!(parse("2026-01-01 09:30Z").at, at("2026-01-01T09:30:00Z"));
        let zoned = parse("2026-01-01 +01:00");
        assert_eq!(zoned.at, at("2025-12-31T23:00:00Z"));
        assert_eq!(
            zoned.read_as.as_deref(),
            Some("the start of 2026-01-01 at +01:00")
        );
        assert_eq!(parse("2026-01-01 -0500").at, at("2026-01-01T05:00:00Z"));
        assert_eq!(parse("2026-01-01 Z").at, at("2026-01-01T00:00:00Z"));
        assert_eq!(parse("yesterday").at, at("2026-12-02T00:00:00Z"));
        assert_eq!(parse("today").at, at("2026-12-03T00:00:00Z"));
        assert_eq!(parse("now").at, now);
        assert_eq!(parse("2h ago").at, at("2026-12-03T12:05:00Z"));
        assert_eq!(parse("90 minutes ago").at, at("2026-12-03T12:35:00Z"));
        assert_eq!(parse("3d ago").at, at("2026-11-30T14:05:00Z"));
    }

    #[test]
    fn as_of_refuses_what_is_ambiguous_and_says_why() {
        let now = at("2026-12-03T14:05:00Z");
        let err = |s: &str| parse_as_of(s, now).unwrap_err();
        assert!(err("2026-01-01T09:30:00").contains("no time zone"));
        assert!(err("2026-01-01T09:30").contains("no time zone"));
        assert!(err("2 months ago").contains("no fixed length"));
        assert!(err("soon").contains("is not a time"));
    }

    #[test]
    fn limit_zero_is_refused() {
        assert!(at_least_one("0").unwrap_err().contains("at least 1"));
        assert_eq!(at_least_one("5"), Ok(5));
    }
}
