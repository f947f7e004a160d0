//! External objects named by URI (`s3://`, `http(s)://`, `file://`), read
//! once through `object_store` when a source meets them: into memory when
//! they fit the store's budget, else streamed to a spill file (never held whole).

use std::io::Write as _;

use bytes::Bytes;
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};

use crate::{BlobError, BlobRef, BlobStore, Pin};
use object_store::aws::AmazonS3Builder;
use object_store::http::HttpBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt};

/// Most bytes one external object may have.
pub const EXTERNAL_OBJECT_BYTES_MAX: u64 = 4 << 30;

/// Why an external object could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("not a URI: {0}")]
    NotAUri(String),
    #[error("unsupported scheme `{0}` (use file://, http://, https:// or s3://)")]
    Scheme(String),
    /// The object store refused or failed (missing object, credentials, network).
    #[error("{0}")]
    Remote(String),
    #[error("{size} bytes is more than the {EXTERNAL_OBJECT_BYTES_MAX} an object may have")]
    TooLarge { size: u64 },
    #[error("the object has {got} bytes, not the {listed} its listing says")]
    Truncated { got: u64, listed: u64 },
    /// Writing the spill file failed.
    #[error("writing {}: {message}", path.display())]
    Spill { path: std::path::PathBuf, message: String },
    #[error(transparent)]
    Store(#[from] BlobError),
}

fn remote(e: impl std::fmt::Display) -> FetchError {
    FetchError::Remote(e.to_string())
}

/// A local path for a `file://` URI (or a plain path), `None` for remote schemes.
pub fn local_path(uri: &str) -> Option<std::path::PathBuf> {
    if let Some(rest) = uri.strip_prefix("file://") {
        return url::Url::parse(&format!("file://{rest}")).ok()?.to_file_path().ok();
    }
    if uri.contains("://") { None } else { Some(std::path::PathBuf::from(uri)) }
}

/// Reads the whole object at `uri` (`s3://bucket/key` with credentials and
/// endpoint from the usual `AWS_*` variables, or `http(s)://…`) into memory.
pub async fn fetch_uri(uri: &str) -> Result<Bytes, FetchError> {
    let got = get(uri).await?;
    got.bytes().await.map_err(remote)
}

/// Fetches the object at `uri` into `store` and pins it: an object larger
/// than the store's memory budget is streamed to a spill file while it is
/// hashed, so it is never in memory whole.
pub async fn fetch_uri_into(store: &BlobStore, uri: &str, media_type: &str) -> Result<(BlobRef, Pin), FetchError> {
    let got = get(uri).await?;
    let size = got.meta.size;
    if size <= store.memory_budget() {
        let bytes = got.bytes().await.map_err(remote)?;
        return Ok(store.put(bytes, media_type, Some(uri.to_string()))?);
    }
    let (path, file) = store.incoming_file()?;
    // Removed unless the store adopted it.
    let guard = RemoveOnDrop(path.clone());
    let mut out = std::io::BufWriter::new(file);
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(remote)?;
        n += chunk.len() as u64;
        if n > EXTERNAL_OBJECT_BYTES_MAX {
            return Err(FetchError::TooLarge { size: n });
        }
        hasher.update(&chunk);
        out.write_all(&chunk).map_err(|e| FetchError::Spill { path: path.clone(), message: e.to_string() })?;
    }
    out.flush().map_err(|e| FetchError::Spill { path: path.clone(), message: e.to_string() })?;
    drop(out);
    if n != size {
        return Err(FetchError::Truncated { got: n, listed: size });
    }
    let held = store.adopt_spilled(&path, hasher.finalize().into(), n, media_type, Some(uri.to_string()));
    drop(guard);
    Ok(held?)
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn get(uri: &str) -> Result<object_store::GetResult, FetchError> {
    let url = url::Url::parse(uri).map_err(|e| FetchError::NotAUri(e.to_string()))?;
    // TLS is rustls on `ring`, which must be installed as the process's provider
    // before a client is built (once; a second install is refused, harmlessly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (store, path): (Box<dyn ObjectStore>, ObjectPath) = match url.scheme() {
        "s3" => {
            let bucket = url.host_str().ok_or_else(|| FetchError::NotAUri("an s3:// URI needs a bucket".into()))?;
            let store = AmazonS3Builder::from_env().with_bucket_name(bucket).build().map_err(remote)?;
            let key = url.path().trim_start_matches('/');
            (Box::new(store), ObjectPath::parse(key).map_err(|e| FetchError::NotAUri(e.to_string()))?)
        }
        "http" | "https" => {
            let origin = url.origin().ascii_serialization();
            let options = ClientOptions::new().with_allow_http(url.scheme() == "http");
            let store = HttpBuilder::new().with_url(origin).with_client_options(options).build().map_err(remote)?;
            let key = url.path().trim_start_matches('/');
            (Box::new(store), ObjectPath::parse(key).map_err(|e| FetchError::NotAUri(e.to_string()))?)
        }
        other => return Err(FetchError::Scheme(other.to_owned())),
    };
    let got = store.get(&path).await.map_err(remote)?;
    if got.meta.size > EXTERNAL_OBJECT_BYTES_MAX {
        return Err(FetchError::TooLarge { size: got.meta.size });
    }
    Ok(got)
}
