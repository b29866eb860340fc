//! Where an archive lives: its address turned into an object store and a prefix in it.

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use crate::ArchiveError;

/// Times a failed request is tried again (with exponential backoff from 100 ms) before the
/// operation fails: an archive run that fails is run again by its caller, later.
const RETRIES_MAX: usize = 3;
/// Longest a request is retried for.
const RETRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// An archive's object store, the prefix in it, and a local directory's path.
pub(crate) type Target = (Arc<dyn ObjectStore>, ObjectPath, Option<std::path::PathBuf>);

/// Opens the object store `url` names: `s3://bucket/prefix`, `file:///path`, or a path;
/// with a local directory's path, where writes must be synced.
pub(crate) fn open(
    url: &str,
    options: impl IntoIterator<Item = (impl AsRef<str>, impl Into<String>)>,
) -> Result<Target, ArchiveError> {
    let invalid = |reason: String| ArchiveError::InvalidAddress {
        url: url.to_owned(),
        reason,
    };
    if url.is_empty() {
        return Err(invalid("it is empty".to_owned()));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("it names no bucket".to_owned()));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (k, v) in options {
            let key: AmazonS3ConfigKey = k
                .as_ref()
                .parse()
                .map_err(|e: object_store::Error| invalid(e.to_string()))?;
            builder = builder.with_config(key, v);
        }
        if builder
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .is_some_and(|e| e.starts_with("http://"))
        {
            builder = builder.with_allow_http(true);
        }
        if builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        let s3 = builder
            .with_retry(object_store::RetryConfig {
                max_retries: RETRIES_MAX,
                retry_timeout: RETRY_TIMEOUT,
                ..object_store::RetryConfig::default()
            })
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let prefix =
            ObjectPath::parse(prefix.trim_end_matches('/')).map_err(|e| invalid(e.to_string()))?;
        return Ok((Arc::new(s3), prefix, None));
    }
    let path = match url.strip_prefix("file://") {
        Some(p) if p.starts_with('/') => std::path::PathBuf::from(p),
        Some(_) => {
            return Err(invalid(
                "a file:// address takes an absolute path".to_owned(),
            ))
        }
        None if url.contains("://") => {
            return Err(invalid(
                "only s3://, file:// and local paths are supported".to_owned(),
            ))
        }
        None => std::path::PathBuf::from(url),
    };
    std::fs::create_dir_all(&path).map_err(|e| invalid(format!("creating the directory: {e}")))?;
    let local = LocalFileSystem::new_with_prefix(&path).map_err(|e| invalid(e.to_string()))?;
    let root = std::fs::canonicalize(&path).map_err(|e| invalid(e.to_string()))?;
    Ok((Arc::new(local), ObjectPath::default(), Some(root)))
}
