//! External objects named by URI (`s3://`, `http(s)://`, `file://`), read
//! once through `object_store` when a source meets them.

use bytes::Bytes;
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
/// endpoint from the usual `AWS_*` variables, or `http(s)://…`).
pub async fn fetch_uri(uri: &str) -> Result<Bytes, String> {
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
    got.bytes().await.map_err(|e| e.to_string())
}
