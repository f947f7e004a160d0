//! External objects named by URI (`s3://`, `http(s)://`, `file://`), read
//! once through `object_store` when a source meets them: into memory when
//! they fit the store's budget, else streamed to a spill file (never held whole).

use std::io::Write as _;

use bytes::Bytes;
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};

use crate::{BlobRef, BlobStore, Pin};
use object_store::aws::AmazonS3Builder;
use object_store::http::HttpBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt};

/// Most bytes one external object may have.
pub const EXTERNAL_OBJECT_BYTES_MAX: u64 = 4 << 30;

/// A local path for a `file://` URI (or a plain path), `None` for remote schemes.
pub fn local_path(uri: &str) -> Option<std::path::PathBuf> {
    if let Some(rest) = uri.strip_prefix("file://") {
        return url::Url::parse(&format!("file://{rest}")).ok()?.to_file_path().ok();
    }
    if uri.contains("://") { None } else { Some(std::path::PathBuf::from(uri)) }
}

/// Reads the whole object at `uri` (`s3://bucket/key` with credentials and
/// endpoint from the usual `AWS_*` variables, or `http(s)://…`) into memory.
pub async fn fetch_uri(uri: &str) -> Result<Bytes, String> {
    let got = get(uri).await?;
    got.bytes().await.map_err(|e| e.to_string())
}

/// Fetches the object at `uri` into `store` and pins it: an object larger
/// than the store's memory budget is streamed to a spill file while it is
/// hashed, so it is never in memory whole.
pub async fn fetch_uri_into(store: &BlobStore, uri: &str, media_type: &str) -> Result<(BlobRef, Pin), String> {
    let got = get(uri).await?;
    let size = got.meta.size;
    if size <= store.memory_budget() {
        let bytes = got.bytes().await.map_err(|e| e.to_string())?;
        return store.put(bytes, media_type, Some(uri.to_string())).map_err(|e| e.to_string());
    }
    let (path, file) = store.incoming_file().map_err(|e| e.to_string())?;
    // Removed unless the store adopted it.
    let guard = RemoveOnDrop(path.clone());
    let mut out = std::io::BufWriter::new(file);
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        n += chunk.len() as u64;
        if n > EXTERNAL_OBJECT_BYTES_MAX {
            return Err(format!("more than the {EXTERNAL_OBJECT_BYTES_MAX} bytes an object may have"));
        }
        hasher.update(&chunk);
        out.write_all(&chunk).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    out.flush().map_err(|e| format!("writing {}: {e}", path.display()))?;
    drop(out);
    if n != size {
        return Err(format!("the object has {n} bytes, not the {size} its listing says"));
    }
    let held = store.adopt_spilled(&path, hasher.finalize().into(), n, media_type, Some(uri.to_string()));
    drop(guard);
    held.map_err(|e| e.to_string())
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn get(uri: &str) -> Result<object_store::GetResult, String> {
    let url = url::Url::parse(uri).map_err(|e| format!("not a URI: {e}"))?;
    // TLS is rustls on `ring`, which must be installed as the process's provider
    // before a client is built (once; a second install is refused, harmlessly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (store, path): (Box<dyn ObjectStore>, ObjectPath) = match url.scheme() {
        "s3" => {
            let bucket = url.host_str().ok_or("an s3:// URI needs a bucket")?;
            let store = AmazonS3Builder::from_env().with_bucket_name(bucket).build().map_err(|e| e.to_string())?;
            let key = url.path().trim_start_matches('/');
            (Box::new(store), ObjectPath::parse(key).map_err(|e| e.to_string())?)
        }
        "http" | "https" => {
            let origin = url.origin().ascii_serialization();
            let options = ClientOptions::new().with_allow_http(url.scheme() == "http");
            let store =
                HttpBuilder::new().with_url(origin).with_client_options(options).build().map_err(|e| e.to_string())?;
            let key = url.path().trim_start_matches('/');
            (Box::new(store), ObjectPath::parse(key).map_err(|e| e.to_string())?)
        }
        other => return Err(format!("unsupported scheme `{other}` (use file://, http://, https:// or s3://)")),
    };
    let got = store.get(&path).await.map_err(|e| e.to_string())?;
    if got.meta.size > EXTERNAL_OBJECT_BYTES_MAX {
        return Err(format!("{} bytes is more than the {EXTERNAL_OBJECT_BYTES_MAX} an object may have", got.meta.size));
    }
    Ok(got)
}
