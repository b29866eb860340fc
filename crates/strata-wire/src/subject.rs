//! Crypto-shredding's answers: `DELETE /subjects/{subject}`.

use serde::{Deserialize, Serialize};

/// What a forget found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum ForgetOutcome {
    /// The subject's key was destroyed now.
    Forgotten,
    /// The subject had been forgotten before: forgetting is idempotent.
    AlreadyForgotten,
    /// Nothing of the subject's was ever sealed; they are marked forgotten all the same.
    NeverSeen,
    /// An outcome this version does not know (a newer server's).
    #[serde(other)]
    Unknown,
}

/// `DELETE /subjects/{subject}`'s answer.
///
/// ```
/// use strata_wire::{ForgetAnswer, ForgetOutcome};
///
/// let doc = r#"{"subject":"customer-42","outcome":"alreadyForgotten",
///   "subjectRef":"8b1a9953c4611296a827abf8c47804d7","position":1207}"#;
/// let answer: ForgetAnswer = serde_json::from_str(doc).unwrap();
/// assert_eq!(answer.outcome, ForgetOutcome::AlreadyForgotten);
/// assert_eq!(answer.position, 1207);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForgetAnswer {
    /// The subject's id, as asked.
    pub subject: String,
    /// Destroyed now, before, or never had a key.
    pub outcome: ForgetOutcome,
    /// The subject's reference: how its sealed values and its `$subjectForgotten` event name
    /// it (32 hex digits).
    pub subject_ref: String,
    /// Where the subject's `$subjectForgotten` event is in `$all`.
    pub position: u64,
}
