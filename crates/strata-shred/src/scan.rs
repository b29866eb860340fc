//! A scan of a JSON text that finds where values lie, by JSON pointer, without building the
//! document: sealing and opening replace a few values' bytes and keep every other byte as it
//! came (the document's own spacing and member order included).
//!
//! The scan trusts nothing: it fails (`None`) on anything it does not expect, and callers then
//! take the slow path that parses the whole document. It is run on documents that the store
//! checks as JSON (appends are checked before they are sealed; reads come from the store).

use std::ops::Range;

use strata_core::limits::JSON_NESTING_MAX_DEPTH;

/// What to do with the value at a pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Report its span, and do not look inside it.
    Take,
    /// Look inside it (an object or an array); a scalar is passed over.
    Descend,
    /// Pass over it.
    Skip,
}

/// A value the scan took: its pointer, its bytes' span, and how many arrays and objects hold
/// it.
pub(crate) struct Taken {
    pub pointer: String,
    pub span: Range<usize>,
    pub depth: usize,
}

/// Calls `at(pointer, bytes from the value's start)` for every value the scan reaches, from the
/// root (pointer `""`) down as `at` asks, and returns the values it took, in document order.
/// `None` when the text is not what the scan expects.
pub(crate) fn scan(json: &[u8], mut at: impl FnMut(&str, &[u8]) -> Step) -> Option<Vec<Taken>> {
    let mut s = Scanner {
        b: json,
        i: 0,
        taken: Vec::new(),
    };
    s.value(&mut String::new(), &mut at, 0)?;
    s.ws();
    (s.i == json.len()).then_some(s.taken)
}

/// [`scan`] for a caller that decides by the bytes alone (`at(bytes from the value's start)`,
/// every value descended into unless taken or passed over): the pointers of the values
/// taken are built, the others never are. Reads are this scan's caller, once per event.
pub(crate) fn scan_bytes(json: &[u8], mut at: impl FnMut(&[u8]) -> Step) -> Option<Vec<Taken>> {
    let mut s = Scanner {
        b: json,
        i: 0,
        taken: Vec::new(),
    };
    s.value(
        &mut Lazy(Vec::new()),
        &mut |_: &str, rest: &[u8]| at(rest),
        0,
    )?;
    s.ws();
    (s.i == json.len()).then_some(s.taken)
}

/// Where the scan is in the document, as it builds it.
trait Path {
    fn len(&self) -> usize;
    fn truncate(&mut self, len: usize);
    /// Appends a member: `json[name]` is its name as written (escapes and all).
    fn member(&mut self, json: &[u8], name: Range<usize>) -> Option<()>;
    fn index(&mut self, n: usize);
    /// The pointer so far, for the caller's decision (empty where it is not built).
    fn as_str(&self) -> &str;
    /// The pointer of a value taken, in `json`.
    fn pointer(&self, json: &[u8]) -> Option<String>;
}

/// A path built as it goes: every decision sees the pointer.
impl Path for String {
    fn len(&self) -> usize {
        String::len(self)
    }
    fn truncate(&mut self, len: usize) {
        String::truncate(self, len);
    }
    fn member(&mut self, json: &[u8], name: Range<usize>) -> Option<()> {
        self.push('/');
        push_escaped(self, &json[name])
    }
    fn index(&mut self, n: usize) {
        self.push('/');
        self.push_str(&n.to_string());
    }
    fn as_str(&self) -> &str {
        self
    }
    fn pointer(&self, _: &[u8]) -> Option<String> {
        Some(self.clone())
    }
}

/// A step of a path kept as places in the document: a member's name, or an index.
enum Seg {
    Member(Range<usize>),
    Index(usize),
}

/// A path built only for the values taken.
struct Lazy(Vec<Seg>);

impl Path for Lazy {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }
    fn member(&mut self, _: &[u8], name: Range<usize>) -> Option<()> {
        self.0.push(Seg::Member(name));
        Some(())
    }
    fn index(&mut self, n: usize) {
        self.0.push(Seg::Index(n));
    }
    fn as_str(&self) -> &str {
        ""
    }
    fn pointer(&self, json: &[u8]) -> Option<String> {
        let mut p = String::new();
        for seg in &self.0 {
            match seg {
                Seg::Member(r) => {
                    p.push('/');
                    push_escaped(&mut p, &json[r.clone()])?;
                }
                Seg::Index(n) => {
                    p.push('/');
                    p.push_str(&n.to_string());
                }
            }
        }
        Some(p)
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    taken: Vec<Taken>,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self
            .b
            .get(self.i)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    /// A string starting at `self.i` (its opening quote): its raw content, past its closing
    /// quote.
    fn string(&mut self) -> Option<Range<usize>> {
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        let start = self.i + 1;
        let mut i = start;
        loop {
            i += memchr::memchr2(b'"', b'\\', self.b.get(i..)?)?;
            if self.b[i] == b'"' {
                break;
            }
            i += 2;
        }
        self.i = i + 1;
        Some(start..i)
    }

    /// Passes over one value without looking at paths.
    fn skip(&mut self) -> Option<()> {
        self.ws();
        let mut depth = 0usize;
        loop {
            match *self.b.get(self.i)? {
                b'"' => {
                    self.string()?;
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.i += 1;
                }
                b'}' | b']' => {
                    depth = depth.checked_sub(1)?;
                    self.i += 1;
                }
                b',' | b':' | b' ' | b'\t' | b'\n' | b'\r' if depth > 0 => self.i += 1,
                _ => {
                    // A scalar: up to the next delimiter.
                    let start = self.i;
                    while self.b.get(self.i).is_some_and(|c| {
                        !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                    }) {
                        self.i += 1;
                    }
                    if self.i == start {
                        return None;
                    }
                }
            }
            if depth == 0 {
                return Some(());
            }
        }
    }

    fn value<P: Path>(
        &mut self,
        path: &mut P,
        at: &mut impl FnMut(&str, &[u8]) -> Step,
        depth: usize,
    ) -> Option<()> {
        self.ws();
        let start = self.i;
        let first = *self.b.get(start)?;
        match at(path.as_str(), &self.b[start..]) {
            Step::Take => {
                self.skip()?;
                self.taken.push(Taken {
                    pointer: path.pointer(self.b)?,
                    span: start..self.i,
                    depth,
                });
                Some(())
            }
            Step::Descend if first == b'{' && depth < JSON_NESTING_MAX_DEPTH => {
                self.i += 1;
                if self.eat(b'}').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    let len = path.len();
                    path.member(self.b, key)?;
                    self.eat(b':')?;
                    self.value(path, at, depth + 1)?;
                    path.truncate(len);
                    if self.eat(b',').is_none() {
                        return self.eat(b'}');
                    }
                }
            }
            Step::Descend if first == b'[' && depth < JSON_NESTING_MAX_DEPTH => {
                self.i += 1;
                if self.eat(b']').is_some() {
                    return Some(());
                }
                for n in 0usize.. {
                    let len = path.len();
                    path.index(n);
                    self.value(path, at, depth + 1)?;
                    path.truncate(len);
                    if self.eat(b',').is_none() {
                        return self.eat(b']');
                    }
                }
                None
            }
            Step::Descend if first == b'{' || first == b'[' => None,
            _ => self.skip(),
        }
    }
}

/// Appends member name `raw` (a string's content as written, escapes and all) to `path`,
/// escaped for a JSON pointer.
fn push_escaped(path: &mut String, raw: &[u8]) -> Option<()> {
    let name: std::borrow::Cow<'_, str> = if raw.contains(&b'\\') {
        let mut quoted = Vec::with_capacity(raw.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(raw);
        quoted.push(b'"');
        serde_json::from_slice::<String>(&quoted).ok()?.into()
    } else {
        std::str::from_utf8(raw).ok()?.into()
    };
    if !name.contains(['~', '/']) {
        path.push_str(&name);
        return Some(());
    }
    for c in name.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
    Some(())
}

/// Whether pointer `p` lies strictly inside pointer `of`.
pub(crate) fn inside(p: &str, of: &str) -> bool {
    of.len() > p.len() && of.starts_with(p) && of.as_bytes()[p.len()] == b'/'
}

/// The text of a sealed value if `bytes` starts with one: `{"$sealed": "<text>"}`, spaces
/// allowed between tokens, nothing else in the object.
pub(crate) fn sealed_text(bytes: &[u8]) -> Option<&str> {
    let mut s = Scanner {
        b: bytes,
        i: 0,
        taken: Vec::new(),
    };
    s.eat(b'{')?;
    s.ws();
    let key = s.string()?;
    if &bytes[key] != crate::seal::SEALED_KEY.as_bytes() {
        return None;
    }
    s.eat(b':')?;
    s.ws();
    let text = s.string()?;
    s.eat(b'}')?;
    let text = std::str::from_utf8(&bytes[text]).ok()?;
    // Only what Strata writes: `v1.`, 32 hex digits, `.`; any other object with that key is
    // data (written before sealing began, say), read as it is.
    let shape = text.len() > 36
        && text.starts_with("v1.")
        && text.as_bytes()[35] == b'.'
        && text.as_bytes()[3..35].iter().all(u8::is_ascii_hexdigit);
    (shape && !text.contains('\\')).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(json: &str, want: &[&str]) -> Option<Vec<(String, String)>> {
        let spans = scan(json.as_bytes(), |p, _| {
            if want.contains(&p) {
                Step::Take
            } else if want.iter().any(|w| inside(p, w)) {
                Step::Descend
            } else {
                Step::Skip
            }
        })?;
        Some(
            spans
                .into_iter()
                .map(|t| (t.pointer, json[t.span].to_owned()))
                .collect(),
        )
    }

    #[test]
    fn values_are_found_by_pointer_with_their_exact_bytes() {
        let json = r#" { "a" : { "b/c" : [1, {"x": "y,}]"} , 3 ] , "~k": true }, "e":"q\"}", "n": -1.5e3 } "#;
        assert_eq!(
            taken(json, &["/a/b~1c/1", "/e", "/n", "/a/~0k"]),
            Some(vec![
                ("/a/b~1c/1".into(), r#"{"x": "y,}]"}"#.into()),
                ("/a/~0k".into(), "true".into()),
                ("/e".into(), r#""q\"}""#.into()),
                ("/n".into(), "-1.5e3".into()),
            ])
        );
        // An escaped member name is compared decoded.
        assert_eq!(
            taken(r#"{"\u0061":1}"#, &["/a"]),
            Some(vec![("/a".into(), "1".into())])
        );
        assert_eq!(taken("[]", &["/0"]), Some(vec![]));
        assert_eq!(
            taken(r#"{"":{"":2}}"#, &["//"]),
            Some(vec![("//".into(), "2".into())])
        );
    }

    #[test]
    fn what_the_scan_does_not_expect_is_refused() {
        for bad in [
            "",
            "{",
            r#"{"a":}"#,
            r#"{"a" 1}"#,
            r#"{"a":1,}"#,
            "[1,]",
            r#"{"a":1} x"#,
            r#""open"#,
            "]",
        ] {
            assert_eq!(taken(bad, &["/a", "/0"]), None, "{bad:?}");
        }
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(taken(&deep, &["/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0"]), None);
    }

    #[test]
    fn sealed_values_are_recognised_with_or_without_spaces() {
        let text = "v1.0123456789abcdef0123456789abcdef.CD";
        let sealed = format!(r#"{{"$sealed":"{text}"}}"#);
        assert_eq!(sealed_text(sealed.as_bytes()), Some(text));
        let spaced = format!(r#"{{ "$sealed" : "{text}" }} , 1"#);
        assert_eq!(sealed_text(spaced.as_bytes()), Some(text));
        let more = format!(r#"{{"$sealed":"{text}","x":1}}"#);
        assert_eq!(sealed_text(more.as_bytes()), None);
        assert_eq!(sealed_text(br#"{"sealed":"v1"}"#), None);
        assert_eq!(sealed_text(br#"{"$sealed":1}"#), None);
        // Not Strata's shape: data, not a sealed value.
        for other in [
            "v1.ab.CD",
            "v2.0123456789abcdef0123456789abcdef.CD",
            "hello",
        ] {
            let doc = format!(r#"{{"$sealed":"{other}"}}"#);
            assert_eq!(sealed_text(doc.as_bytes()), None);
        }
    }

    #[test]
    fn taken_values_know_their_depth() {
        let spans = scan(br#"{"a":[{"b":1}],"c":2}"#, |p, _| match p {
            "/a/0/b" | "/c" => Step::Take,
            _ => Step::Descend,
        })
        .expect("scans");
        let depths: Vec<(String, usize)> =
            spans.into_iter().map(|t| (t.pointer, t.depth)).collect();
        assert_eq!(depths, vec![("/a/0/b".into(), 3), ("/c".into(), 1)]);
    }
}
