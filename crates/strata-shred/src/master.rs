//! The master key: it wraps every subject key, and it never sits beside the data.
//!
//! It is 32 random bytes, given as 64 hex digits by a file, an environment variable or a
//! command the operator configures (a secrets manager's CLI, say). From it Strata derives, by
//! HMAC-SHA256 with fixed labels: the key that wraps subject keys (AES-256-GCM), the key that
//! names subjects on disk (so that a file or row name shows no subject id), and a check value
//! that a key store records on first use, so that a wrong master key is refused at open
//! instead of writing keys nobody can unwrap later.

use std::path::{Path, PathBuf};

use ring::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::limits::MASTER_KEY_TEXT_MAX_BYTES;

/// Why a master key could not be had. Nothing is written without one.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// The variable named is not set (or not UTF-8).
    #[error("the environment variable {0} holding the master key is not set")]
    MissingVariable(String),
    /// The text is not 64 hex digits.
    #[error("the master key from {from} is not 64 hex digits (32 bytes)")]
    Malformed {
        /// Where it came from: a file, a variable or a command, as the operator named it.
        from: String,
    },
    /// The file could not be read.
    #[error("could not read the master key file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The command failed or could not start.
    #[error("the master key command `{command}` failed: {reason}")]
    Command {
        /// The command.
        command: String,
        /// Why (its exit status and first line of standard error).
        reason: String,
    },
}

/// The master key, with the keys derived from it. Its bytes are not kept: only the derived
/// keys, inside ring's key types.
pub struct MasterKey {
    wrap: LessSafeKey,
    /// The bytes of the two above: a store set up before its first rotation keeps them, wrapped
    /// under the next master key ([`crate::rotate_master_key`]).
    wrap_bytes: [u8; 32],
    name_bytes: [u8; 32],
    check: [u8; 16],
    /// Where the key of every sealed snapshot starts: a snapshot is sealed by the master key
    /// and its subjects' keys, so that only a process with the master key writes one.
    snapshot: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// `N` bytes from the operating system's random source: keys and nonces.
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random source");
    bytes
}

/// HMAC-SHA256 of `label` under `key`.
pub(crate) fn derive(key: &[u8], label: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), label);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

impl MasterKey {
    /// A master key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        let wrap = derive(&bytes, b"strata-shred v1 wrap");
        let name = derive(&bytes, b"strata-shred v1 name");
        let check = derive(&bytes, b"strata-shred v1 check");
        let snapshot = derive(&bytes, b"strata-shred v1 snapshot");
        MasterKey {
            wrap: LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &wrap).expect("a 32-byte AES-256 key"),
            ),
            wrap_bytes: wrap,
            name_bytes: name,
            check: check[..16].try_into().expect("16 bytes of 32"),
            snapshot,
        }
    }

    /// A master key from 64 hex digits (white space around them is ignored). `from` names
    /// where the text came from, for the error.
    pub fn from_hex(text: &str, from: &str) -> Result<MasterKey, MasterKeyError> {
        let malformed = || MasterKeyError::Malformed {
            from: from.to_owned(),
        };
        let text = text.trim();
        if text.len() != 64 {
            return Err(malformed());
        }
        let bytes = hex::decode(text).map_err(|_| malformed())?;
        Ok(MasterKey::from_bytes(
            bytes.try_into().map_err(|_| malformed())?,
        ))
    }

    /// The key in file `path` (64 hex digits).
    pub fn from_file(path: &Path) -> Result<MasterKey, MasterKeyError> {
        let file_error = |source| MasterKeyError::File {
            path: path.to_owned(),
            source,
        };
        let text = std::fs::read(path).map_err(file_error)?;
        if text.len() > MASTER_KEY_TEXT_MAX_BYTES {
            return Err(MasterKeyError::Malformed {
                from: format!("file {}", path.display()),
            });
        }
        let text = String::from_utf8_lossy(&text);
        MasterKey::from_hex(&text, &format!("file {}", path.display()))
    }

    /// The key in environment variable `name`.
    pub fn from_env(name: &str) -> Result<MasterKey, MasterKeyError> {
        let text = std::env::var(name).map_err(|_| MasterKeyError::MissingVariable(name.into()))?;
        MasterKey::from_hex(&text, &format!("variable {name}"))
    }

    /// The key printed by `command`, run by `sh -c` (a secrets manager's CLI, say). Blocks
    /// while it runs: call it at start, before serving.
    pub fn from_command(command: &str) -> Result<MasterKey, MasterKeyError> {
        let failed = |reason: String| MasterKeyError::Command {
            command: command.to_owned(),
            reason,
        };
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| failed(e.to_string()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let first = err.lines().next().unwrap_or("").trim().to_owned();
            return Err(failed(format!("{}: {first}", out.status)));
        }
        if out.stdout.len() > MASTER_KEY_TEXT_MAX_BYTES {
            return Err(failed("it printed more than a key".to_owned()));
        }
        MasterKey::from_hex(
            &String::from_utf8_lossy(&out.stdout),
            &format!("command `{command}`"),
        )
    }

    /// A new random master key, as 64 hex digits, for `strata keys generate`.
    pub fn generate_hex() -> String {
        hex::encode(random::<32>())
    }

    /// The key that wraps subject keys.
    pub(crate) fn wrap_key(&self) -> &LessSafeKey {
        &self.wrap
    }

    /// A subject's name on disk in a store never rotated: 16 bytes of HMAC-SHA256 of its id.
    #[cfg(test)]
    pub(crate) fn subject_ref(&self, subject: &str) -> SubjectRef {
        crate::rotation::Secrets::from_master(self).subject_ref(subject)
    }

    /// Where a sealed snapshot's key starts, in a store never rotated.
    pub(crate) fn snapshot_chain(&self) -> &[u8; 32] {
        &self.snapshot
    }

    /// The bytes of the keys derived for wrapping and naming, in a store never rotated.
    pub(crate) fn derived_bytes(&self) -> ([u8; 32], [u8; 32]) {
        (self.wrap_bytes, self.name_bytes)
    }

    /// The value a key store records to recognise this master key.
    pub(crate) fn check_value(&self) -> [u8; 16] {
        self.check
    }
}

/// A subject's name in storage and in sealed values: 16 bytes of HMAC-SHA256 of its id under
/// a key derived from the master key. It names the subject without showing its id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectRef(pub(crate) [u8; 16]);

impl SubjectRef {
    /// Its 32 lowercase hex digits. Every sealed value written names one.
    pub fn to_hex(self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(32);
        for b in self.0 {
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 15)]));
        }
        out
    }

    /// Parses 32 hex digits (either case). Every sealed value read names one.
    pub fn from_hex(text: &str) -> Option<SubjectRef> {
        fn digit(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            }
        }
        let text: &[u8; 32] = text.as_bytes().try_into().ok()?;
        let mut bytes = [0u8; 16];
        for (b, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            *b = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(SubjectRef(bytes))
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl std::fmt::Debug for SubjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SubjectRef({})", self.to_hex())
    }
}

impl std::fmt::Display for SubjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_keys_parse_from_hex_only() {
        let hex = MasterKey::generate_hex();
        assert_eq!(hex.len(), 64);
        assert!(MasterKey::from_hex(&format!(" {hex}\n"), "test").is_ok());
        for bad in ["", "00", &hex[..63], &format!("{}zz", &hex[..62])] {
            assert!(matches!(
                MasterKey::from_hex(bad, "test"),
                Err(MasterKeyError::Malformed { .. })
            ));
        }
        assert_ne!(MasterKey::generate_hex(), hex, "random keys");
    }

    #[test]
    fn subject_refs_depend_on_the_master_key() {
        let a = MasterKey::from_bytes([1; 32]);
        let b = MasterKey::from_bytes([2; 32]);
        assert_eq!(a.subject_ref("alice"), a.subject_ref("alice"));
        assert_ne!(a.subject_ref("alice"), a.subject_ref("bob"));
        assert_ne!(a.subject_ref("alice"), b.subject_ref("alice"));
        assert_ne!(a.check_value(), b.check_value());
        let r = a.subject_ref("alice");
        assert_eq!(SubjectRef::from_hex(&r.to_hex()), Some(r));
        assert_eq!(
            SubjectRef::from_hex(&r.to_hex().to_uppercase()),
            Some(r),
            "either case"
        );
        let hex = r.to_hex();
        for bad in [
            &hex[1..],
            &format!("{hex}0"),
            &format!("g{}", &hex[1..]),
            "",
        ] {
            assert_eq!(SubjectRef::from_hex(bad), None, "{bad}");
        }
        let bytes: [u8; 16] = std::array::from_fn(|i| (i * 17) as u8);
        assert_eq!(SubjectRef(bytes).to_hex(), hex::encode(bytes));
        assert_eq!(
            SubjectRef::from_hex(&hex::encode(bytes)),
            Some(SubjectRef(bytes))
        );
    }

    #[test]
    fn a_command_gives_the_key_or_a_clear_error() {
        let hex = MasterKey::generate_hex();
        let a = MasterKey::from_command(&format!("echo {hex}")).expect("key");
        let b = MasterKey::from_hex(&hex, "test").expect("key");
        assert_eq!(a.check_value(), b.check_value());
        assert!(matches!(
            MasterKey::from_command("echo nope >&2; exit 3"),
            Err(MasterKeyError::Command { reason, .. }) if reason.contains("nope")
        ));
    }
}
