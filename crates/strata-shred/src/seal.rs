//! The crypto envelope: a personal field's value sealed under its subject's key, and subject
//! keys wrapped under the master key.
//!
//! A field is sealed with AES-256-GCM. Its associated data binds the ciphertext to the event id,
//! the field's JSON pointer and the subject, so that a sealed value moved to another event, to
//! another field or claimed for another subject fails to open. The nonce is synthetic (as in
//! SIV): HMAC-SHA256, under a key derived from the subject key, of the associated data and the
//! plaintext. Sealing the same value of the same field of the same event twice therefore
//! gives the same bytes, which keeps an append's idempotent retry a retry (the store compares
//! the data it stores); two different plaintexts never share a nonce.
//!
//! Before sealing, a value is padded to a multiple of [`PAD_BYTES`] (its length in 4 bytes,
//! the value, zeros): a sealed `true` and a sealed `false`, or two short names, have the same
//! length, so that the length of what is left after a forget tells nothing about a short
//! value (a long one shows its size to within 32 bytes).
//!
//! In an event's JSON a sealed value is the object `{"$sealed": "v1.<subject>.<base64url>"}`:
//! the format version, the subject's reference (32 hex digits, see
//! [`SubjectRef`]) and the nonce followed by the ciphertext and its tag.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use uuid::Uuid;

use crate::master::{derive, random, SubjectRef};

/// The key of the object that holds a sealed value.
pub const SEALED_KEY: &str = "$sealed";

/// Sealed values are padded to a multiple of this many bytes.
pub const PAD_BYTES: usize = 32;

/// The value inside a padded plaintext: its length must fit and the padding be zeros.
fn unpad(padded: &[u8]) -> Result<&[u8], SealError> {
    let bad = SealError::Malformed("its padding is not Strata's");
    let len = padded
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or(bad.clone())?;
    let value = padded.get(4..4 + len).ok_or(bad.clone())?;
    if padded[4 + len..].iter().any(|&b| b != 0) || !padded.len().is_multiple_of(PAD_BYTES) {
        return Err(bad);
    }
    Ok(value)
}

/// What a sealed value's text starts with: the format version.
const SEALED_VERSION: &str = "v1";

/// Why a sealed value or a wrapped key did not open. Never garbage: a value either opens to
/// what was sealed or gives one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The text is not a sealed value of a known version.
    #[error("a sealed value is malformed: {0}")]
    Malformed(&'static str),
    /// Authentication failed: the ciphertext, its place (event, field, subject) or the key is
    /// not the one it was sealed with.
    #[error("a sealed value failed authentication: changed, moved, or opened with another key")]
    Tampered,
}

/// A subject's key, as the keys derived from it.
pub(crate) struct SubjectKey {
    enc: LessSafeKey,
    nonce: hmac::Key,
    /// Its share of the key of every snapshot that holds the subject's data.
    snapshot: hmac::Key,
}

impl SubjectKey {
    pub fn from_bytes(key: &[u8; 32]) -> SubjectKey {
        let enc = derive(key, b"strata-shred v1 field key");
        let nonce = derive(key, b"strata-shred v1 nonce key");
        let snapshot = derive(key, b"strata-shred v1 snapshot key");
        SubjectKey {
            enc: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &enc).expect("32 bytes")),
            nonce: hmac::Key::new(hmac::HMAC_SHA256, &nonce),
            snapshot: hmac::Key::new(hmac::HMAC_SHA256, &snapshot),
        }
    }
}

/// What a field's associated data starts with.
const FIELD_AD_LABEL: &[u8] = b"strata-shred v1 field\0";

/// Bytes of a field's associated data before its pointer.
const FIELD_AD_HEAD: usize = FIELD_AD_LABEL.len() + 16 + 16;

/// The associated data of a field: the event id, the subject and the pointer. Built on the
/// stack for pointers of up to 128 bytes (all but rare ones): it is built for every field
/// sealed or opened.
enum FieldAd {
    Short([u8; FIELD_AD_HEAD + 128], usize),
    Long(Vec<u8>),
}

impl FieldAd {
    fn new(event_id: Uuid, pointer: &str, subject: SubjectRef) -> FieldAd {
        let len = FIELD_AD_HEAD + pointer.len();
        let fill = |ad: &mut [u8]| {
            ad[..FIELD_AD_LABEL.len()].copy_from_slice(FIELD_AD_LABEL);
            ad[FIELD_AD_LABEL.len()..FIELD_AD_LABEL.len() + 16]
                .copy_from_slice(event_id.as_bytes());
            ad[FIELD_AD_LABEL.len() + 16..FIELD_AD_HEAD].copy_from_slice(subject.as_bytes());
            ad[FIELD_AD_HEAD..].copy_from_slice(pointer.as_bytes());
        };
        if pointer.len() <= 128 {
            let mut ad = [0u8; FIELD_AD_HEAD + 128];
            fill(&mut ad[..len]);
            FieldAd::Short(ad, len)
        } else {
            let mut ad = vec![0u8; len];
            fill(&mut ad);
            FieldAd::Long(ad)
        }
    }
}

impl AsRef<[u8]> for FieldAd {
    fn as_ref(&self) -> &[u8] {
        match self {
            FieldAd::Short(ad, len) => &ad[..*len],
            FieldAd::Long(ad) => ad,
        }
    }
}

fn field_ad(event_id: Uuid, pointer: &str, subject: SubjectRef) -> FieldAd {
    FieldAd::new(event_id, pointer, subject)
}

/// Seals `plaintext`, the JSON of the value at `pointer` in event `event_id`, for `subject`
/// (`subject_hex` its reference in hex), and appends the sealed value's text to `out`.
pub(crate) fn seal_into(
    out: &mut Vec<u8>,
    key: &SubjectKey,
    event_id: Uuid,
    pointer: &str,
    (subject, subject_hex): (SubjectRef, &str),
    plaintext: &[u8],
) {
    let ad = field_ad(event_id, pointer, subject);
    let ad = ad.as_ref();
    // nonce | length | plaintext | zeros, to a multiple of PAD_BYTES after the nonce.
    let padded = (4 + plaintext.len()).div_ceil(PAD_BYTES) * PAD_BYTES;
    let mut body = Vec::with_capacity(NONCE_LEN + padded + AES_256_GCM.tag_len());
    body.resize(NONCE_LEN, 0);
    body.extend_from_slice(&(plaintext.len() as u32).to_le_bytes());
    body.extend_from_slice(plaintext);
    body.resize(NONCE_LEN + padded, 0);
    let mut ctx = hmac::Context::with_key(&key.nonce);
    ctx.update(&(ad.len() as u64).to_le_bytes());
    ctx.update(ad);
    ctx.update(&body[NONCE_LEN..]);
    let nonce: [u8; NONCE_LEN] = ctx.sign().as_ref()[..NONCE_LEN]
        .try_into()
        .expect("12 bytes of 32");
    body[..NONCE_LEN].copy_from_slice(&nonce);
    let tag = key
        .enc
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(ad),
            &mut body[NONCE_LEN..],
        )
        .expect("AES-GCM seals any input under the size limits");
    body.extend_from_slice(tag.as_ref());
    out.extend_from_slice(SEALED_VERSION.as_bytes());
    out.push(b'.');
    out.extend_from_slice(subject_hex.as_bytes());
    out.push(b'.');
    let at = out.len();
    out.resize(
        at + base64::encoded_len(body.len(), false).expect("a small body"),
        0,
    );
    URL_SAFE_NO_PAD
        .encode_slice(&body, &mut out[at..])
        .expect("sized to fit");
}

/// [`seal_into`], as a string.
#[cfg(test)]
pub(crate) fn seal(
    key: &SubjectKey,
    event_id: Uuid,
    pointer: &str,
    subject: SubjectRef,
    plaintext: &[u8],
) -> String {
    let mut out = Vec::new();
    let hex = subject.to_hex();
    seal_into(&mut out, key, event_id, pointer, (subject, &hex), plaintext);
    String::from_utf8(out).expect("ASCII")
}

/// A sealed value's text taken apart: its subject, and its nonce with ciphertext and tag
/// decoded into `body` (cleared first; one buffer serves an event's fields).
pub(crate) fn parse_into(text: &str, body: &mut Vec<u8>) -> Result<SubjectRef, SealError> {
    // `v1.` 32 hex digits `.` base64url: fixed places, no search.
    let hex_at = SEALED_VERSION.len() + 1;
    let body_at = hex_at + 33;
    if text.len() <= body_at
        || !text.starts_with(SEALED_VERSION)
        || text.as_bytes()[hex_at - 1] != b'.'
    {
        return Err(SealError::Malformed("unknown version"));
    }
    if text.as_bytes()[body_at - 1] != b'.' {
        return Err(SealError::Malformed("no subject reference"));
    }
    let subject = SubjectRef::from_hex(&text[hex_at..body_at - 1])
        .ok_or(SealError::Malformed("no subject reference"))?;
    body.clear();
    URL_SAFE_NO_PAD
        .decode_vec(&text[body_at..], body)
        .map_err(|_| SealError::Malformed("the ciphertext is not base64url"))?;
    let overhead = NONCE_LEN + AES_256_GCM.tag_len();
    if body.len() < overhead + PAD_BYTES || !(body.len() - overhead).is_multiple_of(PAD_BYTES) {
        return Err(SealError::Malformed("the ciphertext has the wrong length"));
    }
    Ok(subject)
}

/// [`parse_into`] with a buffer of its own.
#[cfg(test)]
pub(crate) fn parse(text: &str) -> Result<(SubjectRef, Vec<u8>), SealError> {
    let mut body = Vec::new();
    let subject = parse_into(text, &mut body)?;
    Ok((subject, body))
}

/// Opens a sealed value's `body` ([`parse_into`]) found at `pointer` in event `event_id`,
/// in place: the value's JSON, within `body`.
pub(crate) fn open_in<'b>(
    key: &SubjectKey,
    event_id: Uuid,
    pointer: &str,
    subject: SubjectRef,
    body: &'b mut [u8],
) -> Result<&'b [u8], SealError> {
    let ad = field_ad(event_id, pointer, subject);
    let nonce: [u8; NONCE_LEN] = body[..NONCE_LEN].try_into().expect("checked by parse");
    let plain = key
        .enc
        .open_within(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(ad.as_ref()),
            body,
            NONCE_LEN..,
        )
        .map_err(|_| SealError::Tampered)?;
    unpad(plain)
}

/// [`open_in`], as a vector.
#[cfg(test)]
pub(crate) fn open(
    key: &SubjectKey,
    event_id: Uuid,
    pointer: &str,
    subject: SubjectRef,
    mut body: Vec<u8>,
) -> Result<Vec<u8>, SealError> {
    open_in(key, event_id, pointer, subject, &mut body).map(<[u8]>::to_vec)
}

/// What a sealed snapshot's data starts with. A NUL: no JSON starts so, and a snapshot of an
/// application's own that does is refused rather than mistaken for a sealed one.
pub(crate) const SNAPSHOT_MAGIC: &[u8] = b"\0strata-shred v1 snapshot\0";

/// A sealed snapshot taken apart: the subjects whose keys sealed it, and the rest (nonce,
/// ciphertext, tag).
pub(crate) struct SealedSnapshot<'a> {
    pub subjects: Vec<SubjectRef>,
    sealed: &'a [u8],
}

/// The key of a snapshot that holds the data of `keys`' subjects (sorted, distinct): derived
/// from `chain` (the master key's) through every one of their keys in turn, so that only a
/// process with the master key seals one, and forgetting any subject leaves it underivable.
fn snapshot_key(chain: &[u8; 32], keys: &[(SubjectRef, &SubjectKey)]) -> LessSafeKey {
    let mut acc = *chain;
    for (r, k) in keys {
        let mut ctx = hmac::Context::with_key(&k.snapshot);
        ctx.update(&acc);
        ctx.update(r.as_bytes());
        acc.copy_from_slice(ctx.sign().as_ref());
    }
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &acc).expect("32 bytes"))
}

/// The associated data of a snapshot: where it belongs, and whose keys sealed it.
fn snapshot_ad(place: &[u8], subjects: &[SubjectRef]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(SNAPSHOT_MAGIC.len() + place.len() + 16 * subjects.len());
    ad.extend_from_slice(SNAPSHOT_MAGIC);
    ad.extend_from_slice(&(place.len() as u64).to_le_bytes());
    ad.extend_from_slice(place);
    for r in subjects {
        ad.extend_from_slice(r.as_bytes());
    }
    ad
}

/// Seals a snapshot's `plaintext` under the master key's `chain` and the keys of `keys`'
/// subjects (sorted, distinct, at most [`u16::MAX`]; none for a stream without personal
/// data); `place` names the snapshot (stream, versions), so that it cannot be moved to
/// another. The nonce is random: the same subjects seal many snapshots.
///
/// `MAGIC | subjects (u16 LE) | 16 bytes each | nonce | ciphertext | tag`.
pub(crate) fn seal_snapshot(
    chain: &[u8; 32],
    keys: &[(SubjectRef, &SubjectKey)],
    place: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let subjects: Vec<SubjectRef> = keys.iter().map(|(r, _)| *r).collect();
    let count = u16::try_from(subjects.len()).expect("at most u16::MAX subjects");
    let mut out = Vec::with_capacity(
        SNAPSHOT_MAGIC.len() + 2 + 16 * subjects.len() + NONCE_LEN + plaintext.len() + 16,
    );
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&count.to_le_bytes());
    for r in &subjects {
        out.extend_from_slice(r.as_bytes());
    }
    let nonce = random::<NONCE_LEN>();
    out.extend_from_slice(&nonce);
    let at = out.len();
    out.extend_from_slice(plaintext);
    let tag = snapshot_key(chain, keys)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(snapshot_ad(place, &subjects)),
            &mut out[at..],
        )
        .expect("AES-GCM seals any input under the size limits");
    out.extend_from_slice(tag.as_ref());
    out
}

/// Takes a sealed snapshot apart: `None` when `data` is not one (a snapshot without personal
/// data is stored as it is).
pub(crate) fn parse_snapshot(data: &[u8]) -> Option<Result<SealedSnapshot<'_>, SealError>> {
    let rest = data.strip_prefix(SNAPSHOT_MAGIC)?;
    let bad = SealError::Malformed("a sealed snapshot is cut short");
    let Some((count, rest)) = rest.split_first_chunk::<2>() else {
        return Some(Err(bad));
    };
    let count = usize::from(u16::from_le_bytes(*count));
    if rest.len() < 16 * count + NONCE_LEN + AES_256_GCM.tag_len() {
        return Some(Err(bad));
    }
    let (refs, sealed) = rest.split_at(16 * count);
    let subjects = refs
        .chunks_exact(16)
        .map(|c| SubjectRef(c.try_into().expect("16 bytes")))
        .collect();
    Some(Ok(SealedSnapshot { subjects, sealed }))
}

/// Opens a sealed snapshot with the master key's `chain` and its subjects' keys (in its
/// order), for `place`.
pub(crate) fn open_snapshot(
    chain: &[u8; 32],
    snapshot: &SealedSnapshot<'_>,
    keys: &[(SubjectRef, &SubjectKey)],
    place: &[u8],
) -> Result<Vec<u8>, SealError> {
    let (nonce, body) = snapshot.sealed.split_at(NONCE_LEN);
    let mut body = body.to_vec();
    let plain = snapshot_key(chain, keys)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce.try_into().expect("12 bytes")),
            Aad::from(snapshot_ad(place, &snapshot.subjects)),
            &mut body,
        )
        .map_err(|_| SealError::Tampered)?;
    let len = plain.len();
    body.truncate(len);
    Ok(body)
}

/// Bytes of a wrapped subject key: nonce, key, tag.
pub const WRAPPED_KEY_BYTES: usize = NONCE_LEN + 32 + 16;

fn wrap_ad(subject: SubjectRef) -> Vec<u8> {
    let mut ad = b"strata-shred v1 subject key\0".to_vec();
    ad.extend_from_slice(subject.as_bytes());
    ad
}

/// A new random subject key, and it wrapped under `wrap` for `subject`.
pub(crate) fn new_wrapped_key(
    wrap: &LessSafeKey,
    subject: SubjectRef,
) -> ([u8; 32], [u8; WRAPPED_KEY_BYTES]) {
    let key = random::<32>();
    let wrapped = wrap_subject_key(wrap, subject, &key);
    (key, wrapped)
}

/// `key` wrapped under `wrap` for `subject`, with a random nonce.
pub(crate) fn wrap_subject_key(
    wrap: &LessSafeKey,
    subject: SubjectRef,
    key: &[u8; 32],
) -> [u8; WRAPPED_KEY_BYTES] {
    let nonce = random::<NONCE_LEN>();
    let mut sealed = key.to_vec();
    wrap.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(&wrap_ad(subject)),
        &mut sealed,
    )
    .expect("AES-GCM seals 32 bytes");
    let mut wrapped = [0u8; WRAPPED_KEY_BYTES];
    wrapped[..NONCE_LEN].copy_from_slice(&nonce);
    wrapped[NONCE_LEN..].copy_from_slice(&sealed);
    wrapped
}

/// Unwraps a subject key: [`SealError::Tampered`] when the bytes, the subject or the wrapping
/// key is not the one it was wrapped with.
pub(crate) fn unwrap_key(
    wrap: &LessSafeKey,
    subject: SubjectRef,
    wrapped: &[u8],
) -> Result<[u8; 32], SealError> {
    if wrapped.len() != WRAPPED_KEY_BYTES {
        return Err(SealError::Malformed("a wrapped key of the wrong length"));
    }
    let nonce: [u8; NONCE_LEN] = wrapped[..NONCE_LEN].try_into().expect("12 bytes");
    let mut sealed = wrapped[NONCE_LEN..].to_vec();
    let key = wrap
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&wrap_ad(subject)),
            &mut sealed,
        )
        .map_err(|_| SealError::Tampered)?;
    key.try_into().map_err(|_| SealError::Tampered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::MasterKey;

    fn setup() -> (MasterKey, SubjectRef, SubjectKey) {
        let master = MasterKey::from_bytes([7; 32]);
        let subject = master.subject_ref("customer-1");
        let (key, _) = new_wrapped_key(master.wrap_key(), subject);
        (master, subject, SubjectKey::from_bytes(&key))
    }

    #[test]
    fn a_sealed_snapshot_opens_only_in_its_place_with_every_key() {
        let master = MasterKey::from_bytes([7; 32]);
        let mut subjects: Vec<(SubjectRef, SubjectKey)> = ["c-1", "c-2"]
            .iter()
            .map(|s| {
                let r = master.subject_ref(s);
                (
                    r,
                    SubjectKey::from_bytes(&new_wrapped_key(master.wrap_key(), r).0),
                )
            })
            .collect();
        subjects.sort_by_key(|(r, _)| *r);
        let keys: Vec<(SubjectRef, &SubjectKey)> = subjects.iter().map(|(r, k)| (*r, k)).collect();
        let state = br#"{"owner":"Ada Lovelace"}"#;
        let chain = master.snapshot_chain();
        let sealed = seal_snapshot(chain, &keys, b"account-1@7", state);
        assert!(!sealed.windows(3).any(|w| w == b"Ada"));
        let parsed = parse_snapshot(&sealed).expect("sealed").expect("parses");
        assert_eq!(parsed.subjects, [keys[0].0, keys[1].0]);
        assert_eq!(
            open_snapshot(chain, &parsed, &keys, b"account-1@7").expect("opens"),
            state
        );
        // Another place, a missing key, another order, a flipped byte: never opened.
        assert_eq!(
            open_snapshot(chain, &parsed, &keys, b"account-2@7").err(),
            Some(SealError::Tampered)
        );
        assert_eq!(
            open_snapshot(chain, &parsed, &keys[..1], b"account-1@7").err(),
            Some(SealError::Tampered)
        );
        let reversed = [keys[1], keys[0]];
        assert_eq!(
            open_snapshot(chain, &parsed, &reversed, b"account-1@7").err(),
            Some(SealError::Tampered)
        );
        for i in SNAPSHOT_MAGIC.len()..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            let opened = parse_snapshot(&bad)
                .expect("still sealed")
                .and_then(|p| open_snapshot(chain, &p, &keys, b"account-1@7"));
            assert!(opened.is_err(), "byte {i} flipped opened");
        }
        // Another master key, or none of the subjects' keys: never opened.
        let other = MasterKey::from_bytes([8; 32]);
        assert_eq!(
            open_snapshot(other.snapshot_chain(), &parsed, &keys, b"account-1@7").err(),
            Some(SealError::Tampered)
        );
        let bare = seal_snapshot(chain, &[], b"account-1@7", state);
        let bare = parse_snapshot(&bare).expect("sealed").expect("parses");
        assert!(bare.subjects.is_empty());
        assert_eq!(
            open_snapshot(chain, &bare, &[], b"account-1@7").expect("opens"),
            state
        );
        assert!(open_snapshot(other.snapshot_chain(), &bare, &[], b"account-1@7").is_err());
        assert!(parse_snapshot(br#"{"owner":"Ada"}"#).is_none());
        assert!(matches!(
            parse_snapshot(&sealed[..SNAPSHOT_MAGIC.len() + 10]),
            Some(Err(SealError::Malformed(_)))
        ));
    }

    #[test]
    fn a_sealed_value_opens_only_in_its_place_under_its_key() {
        let (master, subject, key) = setup();
        let id = Uuid::new_v4();
        let text = seal(&key, id, "/email", subject, br#""ada@example.com""#);
        assert!(!text.contains("ada"), "{text}");
        let (s, body) = parse(&text).expect("parses");
        assert_eq!(s, subject);
        assert_eq!(
            open(&key, id, "/email", subject, body.clone()).expect("opens"),
            br#""ada@example.com""#
        );
        // Same value, same place: same bytes (an idempotent retry stays one).
        assert_eq!(
            seal(&key, id, "/email", subject, br#""ada@example.com""#),
            text
        );
        // Moved to another event, another field, another subject: refused.
        let other = master.subject_ref("customer-2");
        for (event, pointer, who) in [
            (Uuid::new_v4(), "/email", subject),
            (id, "/name", subject),
            (id, "/email", other),
        ] {
            assert_eq!(
                open(&key, event, pointer, who, body.clone()),
                Err(SealError::Tampered)
            );
        }
        // Another key: refused.
        let (_, _, stranger) = setup();
        assert_eq!(
            open(&stranger, id, "/email", subject, body.clone()),
            Err(SealError::Tampered)
        );
        // Any flipped bit: refused.
        for i in 0..body.len() {
            let mut b = body.clone();
            b[i] ^= 0x01;
            assert_eq!(
                open(&key, id, "/email", subject, b),
                Err(SealError::Tampered),
                "byte {i}"
            );
        }
    }

    #[test]
    fn short_values_seal_to_the_same_length() {
        let (_, subject, key) = setup();
        let id = Uuid::new_v4();
        let len = |v: &[u8]| seal(&key, id, "/a", subject, v).len();
        assert_eq!(len(b"true"), len(b"false"));
        assert_eq!(len(br#""male""#), len(br#""female""#));
        assert_eq!(len(b"1"), len(&[b'7'; 28]));
        assert!(
            len(&[b'7'; 29]) > len(&[b'7'; 28]),
            "past a bucket, the next one"
        );
        for v in [&b""[..], b"x", &[b'y'; 28], &[b'z'; 29], &[b'w'; 100]] {
            let (_, body) = parse(&seal(&key, id, "/a", subject, v)).expect("parses");
            assert_eq!(open(&key, id, "/a", subject, body), Ok(v.to_vec()));
        }
        let mut p = [0u8; 32];
        p[0] = 3;
        assert_eq!(unpad(&p), Ok(&[0u8; 3][..]));
        p[10] = 1;
        assert!(unpad(&p).is_err(), "padding must be zeros");
        p[10] = 0;
        p[0] = 200;
        assert!(unpad(&p).is_err(), "a length past the end");
    }

    #[test]
    fn malformed_sealed_text_is_a_typed_error() {
        let (_, subject, key) = setup();
        let good = seal(&key, Uuid::new_v4(), "/a", subject, b"1");
        for bad in [
            "",
            "v2.00.AA",
            "v1.zz.AA",
            "v1.0123",
            &format!("v1.{}.***", subject.to_hex()),
            &format!("v1.{}.AAAA", subject.to_hex()),
            &good[..good.len() - 30],
        ] {
            assert!(
                matches!(parse(bad), Err(SealError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_wrapped_key_unwraps_only_for_its_subject_under_its_master() {
        let master = MasterKey::from_bytes([7; 32]);
        let subject = master.subject_ref("customer-1");
        let (key, wrapped) = new_wrapped_key(master.wrap_key(), subject);
        assert_eq!(unwrap_key(master.wrap_key(), subject, &wrapped), Ok(key));
        assert_eq!(
            unwrap_key(
                master.wrap_key(),
                master.subject_ref("customer-2"),
                &wrapped
            ),
            Err(SealError::Tampered)
        );
        assert_eq!(
            unwrap_key(MasterKey::from_bytes([8; 32]).wrap_key(), subject, &wrapped),
            Err(SealError::Tampered)
        );
        let mut flipped = wrapped;
        flipped[20] ^= 1;
        assert_eq!(
            unwrap_key(master.wrap_key(), subject, &flipped),
            Err(SealError::Tampered)
        );
    }
}
