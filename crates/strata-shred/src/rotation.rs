//! Master key rotation.
//!
//! A store's subject keys are wrapped under a wrapping key, and subject references are named
//! by a naming key; before the first rotation both are derived from the master key. Rotating
//! to a new master key:
//!
//! 1. draws a new random wrapping key, and records the store's secrets (the new wrapping key,
//!    the one it replaces, the naming key and the snapshot key) sealed under the new master
//!    key, with the new master key's check value, in one atomic write. From then on only the
//!    new master key opens the store;
//! 2. re-wraps every subject key under the new wrapping key, each in one atomic write;
//! 3. records the secrets again without the old wrapping key.
//!
//! A rotation stopped at any point is finished by running it again with the same two keys (a
//! store opened meanwhile with the new key reads keys wrapped either way). Afterwards the old
//! master key opens nothing the store holds. Subject references do not change (they are in
//! the events), so the naming key is carried over: `docs/gdpr.md` says what that means if an
//! old master key leaks.

use std::sync::Arc;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;

use crate::keys::{KeyError, KeyStorage, StoredKey};
use crate::master::{random, MasterKey, SubjectRef};
use crate::seal::{unwrap_key, wrap_subject_key};

/// The associated data of sealed store secrets.
const SECRETS_AD: &[u8] = b"strata-shred v1 store secrets\0";
/// The format of store secrets.
const SECRETS_VERSION: u8 = 1;

/// What a key store keeps once a rotation has run: the check value of the master key in
/// force, and the store's secrets sealed under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSecrets {
    /// The check value of the master key the secrets are sealed under.
    pub check: [u8; 16],
    /// The secrets, sealed (nonce, ciphertext, tag).
    pub sealed: Vec<u8>,
}

/// The keys a keyring works with: wrapping keys (the current first; during a rotation, the one
/// it replaces after it), the naming key, and where snapshot keys start.
pub(crate) struct Secrets {
    wraps: Vec<([u8; 32], LessSafeKey)>,
    name_bytes: [u8; 32],
    name: hmac::Key,
    snapshot: [u8; 32],
}

impl Secrets {
    fn new(wraps: Vec<[u8; 32]>, name: [u8; 32], snapshot: [u8; 32]) -> Secrets {
        Secrets {
            wraps: wraps
                .into_iter()
                .map(|w| {
                    let key =
                        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &w).expect("32 bytes"));
                    (w, key)
                })
                .collect(),
            name_bytes: name,
            name: hmac::Key::new(hmac::HMAC_SHA256, &name),
            snapshot,
        }
    }

    /// The secrets of a store never rotated: derived from its master key.
    pub(crate) fn from_master(master: &MasterKey) -> Secrets {
        let (wrap, name) = master.derived_bytes();
        Secrets::new(vec![wrap], name, *master.snapshot_chain())
    }

    /// The key new subject keys are wrapped under.
    pub(crate) fn wrap(&self) -> &LessSafeKey {
        &self.wraps[0].1
    }

    /// Every key a subject key may be wrapped under, the current first.
    pub(crate) fn wraps(&self) -> impl Iterator<Item = &LessSafeKey> {
        self.wraps.iter().map(|(_, k)| k)
    }

    /// A subject's reference: 16 bytes of HMAC-SHA256 of its id under the naming key.
    pub(crate) fn subject_ref(&self, subject: &str) -> SubjectRef {
        let tag = hmac::sign(&self.name, subject.as_bytes());
        SubjectRef(tag.as_ref()[..16].try_into().expect("16 bytes of 32"))
    }

    /// Where a sealed snapshot's key starts.
    pub(crate) fn snapshot_chain(&self) -> &[u8; 32] {
        &self.snapshot
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = vec![SECRETS_VERSION, self.wraps.len() as u8];
        for (w, _) in &self.wraps {
            b.extend_from_slice(w);
        }
        b.extend_from_slice(&self.name_bytes);
        b.extend_from_slice(&self.snapshot);
        b
    }

    fn decode(b: &[u8]) -> Option<Secrets> {
        let (&[version, count], rest) = b.split_first_chunk::<2>()?;
        let count = usize::from(count);
        if version != SECRETS_VERSION || !(1..=2).contains(&count) || rest.len() != 32 * (count + 2)
        {
            return None;
        }
        let chunk = |i: usize| -> [u8; 32] { rest[32 * i..32 * (i + 1)].try_into().expect("32") };
        Some(Secrets::new(
            (0..count).map(chunk).collect(),
            chunk(count),
            chunk(count + 1),
        ))
    }

    /// Sealed under `master`, for its check value.
    fn seal(&self, master: &MasterKey) -> StoredSecrets {
        let nonce = random::<NONCE_LEN>();
        let check = master.check_value();
        let mut body = self.encode();
        master
            .wrap_key()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from([SECRETS_AD, &check].concat()),
                &mut body,
            )
            .expect("AES-GCM seals the secrets");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&body);
        StoredSecrets { check, sealed }
    }

    /// Opens stored secrets with `master` (whose check value they carry).
    pub(crate) fn open(
        stored: &StoredSecrets,
        master: &MasterKey,
        at: &str,
    ) -> Result<Secrets, KeyError> {
        let damaged = || {
            KeyError::Backend(format!(
                "the store secrets at {at} do not open under the master key their check value names"
            ))
        };
        if stored.sealed.len() < NONCE_LEN {
            return Err(damaged());
        }
        let (nonce, body) = stored.sealed.split_at(NONCE_LEN);
        let mut body = body.to_vec();
        let plain = master
            .wrap_key()
            .open_in_place(
                Nonce::assume_unique_for_key(nonce.try_into().expect("12 bytes")),
                Aad::from([SECRETS_AD, &stored.check].concat()),
                &mut body,
            )
            .map_err(|_| damaged())?;
        Secrets::decode(plain).ok_or_else(damaged)
    }
}

/// What [`rotate_master_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// Subject keys re-wrapped under the new wrapping key now.
    pub rewrapped: u64,
    /// Subject keys found re-wrapped already (a rotation run again after a stop).
    pub already: u64,
    /// Whether this run finished a rotation that an earlier run started.
    pub resumed: bool,
}

/// Steps 2 and 3 of a rotation to `master`, whose secrets are `rotating` (the new wrapping key
/// first): every subject key re-wrapped under it, then the secrets without the old one.
/// Returns the keys re-wrapped now, and those found re-wrapped already.
async fn finish(
    storage: &dyn KeyStorage,
    rotating: &Secrets,
    master: &MasterKey,
) -> Result<(u64, u64), KeyError> {
    let (mut rewrapped, mut already) = (0, 0);
    for prefix in 0..=u8::MAX {
        for subject in storage.subjects(prefix).await? {
            let StoredKey::Wrapped(wrapped) = storage.load(subject).await? else {
                continue;
            };
            if unwrap_key(rotating.wrap(), subject, &wrapped).is_ok() {
                already += 1;
                continue;
            }
            let key = rotating
                .wraps()
                .skip(1)
                .find_map(|w| unwrap_key(w, subject, &wrapped).ok())
                .ok_or_else(|| KeyError::Damaged {
                    subject,
                    reason: "it unwraps under neither the old nor the new wrapping key".to_owned(),
                })?;
            let new = wrap_subject_key(rotating.wrap(), subject, &key);
            // False when a forget destroyed it meanwhile: nothing to carry over.
            if storage.rewrap(subject, wrapped, new).await? {
                rewrapped += 1;
            }
        }
    }
    let done = Secrets::new(
        vec![rotating.wraps[0].0],
        rotating.name_bytes,
        rotating.snapshot,
    );
    if !storage
        .set_secrets(master.check_value(), &done.seal(master))
        .await?
    {
        return Err(KeyError::WrongMasterKey(storage.name()));
    }
    Ok((rewrapped, already))
}

/// Rotates the master key of the key store `storage` from `old` to `new` (module docs). Run
/// it with no other process using the store: a process still running with the old master key
/// can no longer create keys (PostgreSQL refuses them; restart it with the new key). Run
/// again with the same keys, it finishes a rotation a stop interrupted.
pub async fn rotate_master_key(
    storage: Arc<dyn KeyStorage>,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<RotationReport, KeyError> {
    let at = storage.name();
    if old.check_value() == new.check_value() {
        return Err(KeyError::Rotation(
            "the new master key is the one in force: give another one".to_owned(),
        ));
    }
    let (secrets, resumed) = match storage.secrets().await? {
        Some(s) if s.check == new.check_value() => (Secrets::open(&s, new, &at)?, true),
        Some(s) if s.check == old.check_value() => (Secrets::open(&s, old, &at)?, false),
        Some(_) => return Err(KeyError::WrongMasterKey(at)),
        None if storage.check_master(old.check_value()).await? => {
            (Secrets::from_master(old), false)
        }
        None => return Err(KeyError::WrongMasterKey(at)),
    };
    let rotating = if resumed {
        secrets
    } else {
        // A rotation to `old` that stopped part way holds two wrapping keys: it is finished
        // first, or the keys it had not re-wrapped would be left under one dropped below.
        let secrets = if secrets.wraps.len() > 1 {
            finish(storage.as_ref(), &secrets, old).await?;
            Secrets::new(
                vec![secrets.wraps[0].0],
                secrets.name_bytes,
                secrets.snapshot,
            )
        } else {
            secrets
        };
        // 1. A new wrapping key, beside the one it replaces, under the new master key.
        let current = secrets.wraps[0].0;
        let rotating = Secrets::new(
            vec![random::<32>(), current],
            secrets.name_bytes,
            secrets.snapshot,
        );
        if !storage
            .set_secrets(old.check_value(), &rotating.seal(new))
            .await?
        {
            return Err(KeyError::WrongMasterKey(at));
        }
        rotating
    };
    let (rewrapped, already) = finish(storage.as_ref(), &rotating, new).await?;
    let report = RotationReport {
        rewrapped,
        already,
        resumed,
    };
    Ok(report)
}
