//! A key storage over another, with hooks where the fault tests stop or fail it.

use std::sync::Arc;

use async_trait::async_trait;
use strata_shred::{
    KeyError, KeyStorage, PendingForget, StoredKey, StoredSecrets, SubjectRef, WRAPPED_KEY_BYTES,
};

/// Where a test steps in. Each does nothing unless a test says otherwise.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// After a load has read, before it answers.
    async fn after_load(&self) {}
    /// Before a re-wrap: an error stops it.
    fn before_rewrap(&self) -> Result<(), KeyError> {
        Ok(())
    }
}

/// `inner`, with `hooks`.
pub struct Hooked<H> {
    pub inner: Arc<dyn KeyStorage>,
    pub hooks: H,
}

#[async_trait]
impl<H: Hooks> KeyStorage for Hooked<H> {
    async fn check_master(&self, check: [u8; 16]) -> Result<bool, KeyError> {
        self.inner.check_master(check).await
    }
    async fn load(&self, s: SubjectRef) -> Result<StoredKey, KeyError> {
        let v = self.inner.load(s).await?;
        self.hooks.after_load().await;
        Ok(v)
    }
    async fn create(
        &self,
        s: SubjectRef,
        w: [u8; WRAPPED_KEY_BYTES],
        check: [u8; 16],
    ) -> Result<StoredKey, KeyError> {
        self.inner.create(s, w, check).await
    }
    async fn forget(&self, p: &PendingForget) -> Result<StoredKey, KeyError> {
        self.inner.forget(p).await
    }
    async fn pending(&self) -> Result<Vec<PendingForget>, KeyError> {
        self.inner.pending().await
    }
    async fn settle(&self, s: SubjectRef) -> Result<(), KeyError> {
        self.inner.settle(s).await
    }
    fn name(&self) -> String {
        format!("hooked {}", self.inner.name())
    }
    async fn secrets(&self) -> Result<Option<StoredSecrets>, KeyError> {
        self.inner.secrets().await
    }
    async fn set_secrets(&self, expected: [u8; 16], new: &StoredSecrets) -> Result<bool, KeyError> {
        self.inner.set_secrets(expected, new).await
    }
    async fn subjects(&self, prefix: u8) -> Result<Vec<SubjectRef>, KeyError> {
        self.inner.subjects(prefix).await
    }
    async fn rewrap(
        &self,
        s: SubjectRef,
        from: [u8; WRAPPED_KEY_BYTES],
        to: [u8; WRAPPED_KEY_BYTES],
    ) -> Result<bool, KeyError> {
        self.hooks.before_rewrap()?;
        self.inner.rewrap(s, from, to).await
    }
}
