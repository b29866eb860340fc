//! Query strings and path segments, as the server reads them back.

/// Percent-encodes a query value or path segment: everything but ASCII letters, digits and
/// `-_.~` becomes `%XX`, so any string survives the server's strict query parser unchanged.
///
/// ```
/// assert_eq!(strata_wire::query::encode("a/b c$ü"), "a%2Fb%20c%24%C3%BC");
/// ```
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
