//! Operator packages in OCI registries, in the CNCF layout for Wasm artifacts.
//!
//! [`OciRegistry`] pushes an [`Artifact`] (one Wasm component, its config and the manifest's
//! annotations) to any registry that speaks the OCI distribution protocol, pulls it back by tag
//! or digest, and lists a repository's tags. Only this crate names `oci-client`.
//!
//! # Layout
//!
//! The CNCF TAG Runtime "Wasm OCI Artifact" layout, which wasmCloud, Spin, `wkg` and
//! `oras` users share:
//!
//! - the manifest is an OCI image manifest (`application/vnd.oci.image.manifest.v1+json`,
//!   schema version 2) without an `artifactType`; its `annotations` are
//!   [`Artifact::annotations`] (left out when empty);
//! - the config blob has media type [`WASM_CONFIG_MEDIA_TYPE`] and holds the JSON that
//!   [`wasm_config`] builds: `created`, `architecture: "wasm"`, `os: "wasip2"`, the layer
//!   digests, and the component's imports, exports and target world;
//! - there is exactly one layer, the component's bytes, with media type
//!   [`WASM_LAYER_MEDIA_TYPE`]. Push gives its descriptor the annotation
//!   `org.opencontainers.image.title: component.wasm`, so generic tools such as `oras pull`
//!   save it under a file name; pull ignores layer annotations.
//!
//! Push uploads each blob the repository does not hold yet, then the manifest under the tag,
//! and returns the manifest's digest: the SHA-256 of the exact manifest bytes sent, which is
//! what a registry names it by. The manifest is serialized deterministically, so pushing the
//! same artifact twice gives the same digest.
//!
//! # Verification on pull
//!
//! Nothing a registry sends is trusted; in order:
//!
//! 1. The manifest is at most [`MANIFEST_BYTES_MAX`]. Its SHA-256 is its digest; when the
//!    reference names a digest, the two must be equal, and when the registry sends a
//!    `Docker-Content-Digest` header, that must match too.
//! 2. The manifest must be the layout above: an OCI image manifest (an image index, a Docker
//!    manifest or any other media type is refused), config media type
//!    [`WASM_CONFIG_MEDIA_TYPE`], exactly one layer, of media type [`WASM_LAYER_MEDIA_TYPE`],
//!    and `sha256:` digests (the one algorithm verified here).
//! 3. Each blob's declared size must be within its limit ([`CONFIG_BYTES_MAX`],
//!    [`COMPONENT_BYTES_MAX`]) before it is fetched; while it streams in, the download is cut
//!    off as soon as it exceeds the declared size; at the end its length must equal the
//!    declared size and its SHA-256 the descriptor's digest. `oci-client` checks the digest
//!    too; this crate checks it again itself so the guarantee does not rest on a dependency.
//! 4. The config must be a JSON object, as its media type says.
//!
//! Only then is the [`Artifact`] returned.

mod config;
mod error;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
    OciDescriptor, OciImageManifest,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use config::sha256_digest;
pub use config::wasm_config;
pub use error::RegistryError;

/// The config media type of the CNCF Wasm OCI layout.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";

/// The media type of the layer that holds the component.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";

/// The largest manifest accepted, in bytes.
///
/// Threat: a registry (or whatever answers in its name) sending an endless or huge manifest to
/// exhaust memory. A real manifest here is well under 64 KiB; the generous bound leaves room for
/// annotations. `oci-client` reads a manifest whole before handing it over, so a larger one is
/// refused after it is read; push refuses to send one.
pub const MANIFEST_BYTES_MAX: usize = 4 << 20;

/// The largest config blob accepted, in bytes.
///
/// Threat: a manifest declaring a huge config to exhaust memory. Checked against the declared
/// size before the download and enforced while it streams; push refuses to send a larger one.
pub const CONFIG_BYTES_MAX: u64 = 4 << 20;

/// The largest component accepted, in bytes.
///
/// Threat: a manifest declaring, or a registry streaming, an enormous layer to exhaust memory
/// or disk. Checked against the declared size before the download and enforced while it
/// streams; push refuses to send a larger one.
pub const COMPONENT_BYTES_MAX: u64 = 256 << 20;

/// The most tags [`OciRegistry::tags`] collects from one repository.
///
/// Threat: a registry paginating forever (each page naming new tags) to keep the caller
/// looping and its memory growing.
pub const TAGS_MAX: usize = 100_000;

/// How long to wait for a registry to accept a connection.
///
/// Threat: an unreachable address that drops packets would otherwise hang a push or pull.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a single read from a registry may take.
///
/// Threat: a registry that accepts a request and then stalls (or trickles nothing) would
/// otherwise hang a push or pull forever.
pub const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Tags asked for per page of a tag listing (the OCI `n` parameter).
const TAGS_PAGE: usize = 1000;

/// The file name generic OCI tools give the component layer.
const LAYER_TITLE: &str = "component.wasm";

/// The OCI annotation that names a layer's file.
const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

/// What a manifest pull accepts: the OCI manifest, and the types it is told apart from, so a
/// registry answers with what it holds and the refusal can say what that was.
const MANIFEST_ACCEPT: &[&str] =
    &[OCI_IMAGE_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, IMAGE_MANIFEST_LIST_MEDIA_TYPE];

/// One operator package as stored in a registry.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Artifact {
    /// The config blob, media type [`WASM_CONFIG_MEDIA_TYPE`]; build it with [`wasm_config`].
    pub config: Vec<u8>,
    /// The component: the single layer, media type [`WASM_LAYER_MEDIA_TYPE`].
    pub component: Vec<u8>,
    /// The manifest's annotations (`org.opencontainers.image.*` and the like).
    pub annotations: BTreeMap<String, String>,
}

impl fmt::Debug for Artifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Artifact")
            .field("config_bytes", &self.config.len())
            .field("component_bytes", &self.component.len())
            .field("annotations", &self.annotations)
            .finish()
    }
}

/// How to reach registries.
#[derive(Clone, Default)]
pub struct OciOptions {
    /// Registries spoken to over plain HTTP instead of HTTPS, as `host[:port]` exactly as they
    /// appear in references (e.g. `127.0.0.1:5000`). Everything else uses HTTPS with the
    /// platform's usual certificate checks.
    pub insecure_http: Vec<String>,
    /// The user for HTTP basic authentication (or the token exchange a registry asks for).
    /// With neither this nor `password`, access is anonymous. The credentials are offered to
    /// every registry this client talks to.
    pub username: Option<String>,
    /// The password (or access token) for `username`.
    pub password: Option<String>,
}

impl fmt::Debug for OciOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OciOptions")
            .field("insecure_http", &self.insecure_http)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Where a push put the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedRef {
    /// The manifest's digest, `sha256:<hex>`.
    pub digest: String,
    /// The URL of the manifest, as the registry reported it.
    pub url: String,
    /// The pushed manifest pinned by digest: `host[:port]/repository@sha256:<hex>`.
    pub reference: String,
}

/// A client for OCI distribution registries, for operator packages in the CNCF Wasm layout.
///
/// Cheap to share by reference; it caches the registries' auth tokens.
pub struct OciRegistry {
    /// The client, or why the options could not make one (reported by every operation).
    client: Result<Connection, String>,
}

struct Connection {
    client: Client,
    auth: RegistryAuth,
    insecure_http: Vec<String>,
}

impl fmt::Debug for OciRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.client {
            Ok(connection) => f
                .debug_struct("OciRegistry")
                .field("insecure_http", &connection.insecure_http)
                .field(
                    "auth",
                    &match connection.auth {
                        RegistryAuth::Anonymous => "anonymous",
                        _ => "basic",
                    },
                )
                .finish(),
            Err(reason) => f.debug_struct("OciRegistry").field("unusable", reason).finish(),
        }
    }
}

impl OciRegistry {
    /// A client with these options.
    ///
    /// Never fails: options that cannot make a client (a username without a password, say)
    /// make every operation return [`RegistryError::Options`].
    pub fn new(options: OciOptions) -> Self {
        // The TLS stack is rustls on ring; another crate may have installed it already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let auth = match (options.username, options.password) {
            (None, None) => Ok(RegistryAuth::Anonymous),
            (Some(username), Some(password)) => Ok(RegistryAuth::Basic(username, password)),
            (Some(_), None) => Err("a username is set without a password".to_owned()),
            (None, Some(_)) => Err("a password is set without a username".to_owned()),
        };
        let client = auth.and_then(|auth| {
            let config = ClientConfig {
                protocol: ClientProtocol::HttpsExcept(options.insecure_http.clone()),
                connect_timeout: Some(CONNECT_TIMEOUT),
                read_timeout: Some(READ_TIMEOUT),
                ..ClientConfig::default()
            };
            // `Client::new` would fall back to a default configuration (and so to HTTPS
            // everywhere) on error; `try_from` says what went wrong instead.
            Client::try_from(config)
                .map(|client| Connection { client, auth, insecure_http: options.insecure_http })
                .map_err(|error| format!("cannot build an HTTP client: {}", causes(&error)))
        });
        OciRegistry { client }
    }

    /// Pushes `artifact` to `reference` (`host[:port]/repository:tag`, the tag defaulting to
    /// `latest`) in the CNCF Wasm layout, and returns the manifest's digest and URL.
    ///
    /// Refuses, before sending anything, a component over [`COMPONENT_BYTES_MAX`], a config
    /// over [`CONFIG_BYTES_MAX`] or that is not a JSON object, and annotations that make the
    /// manifest larger than [`MANIFEST_BYTES_MAX`].
    pub async fn push(&self, reference: &str, artifact: &Artifact) -> Result<PushedRef, RegistryError> {
        let image = parse_reference(reference)?;
        if image.digest().is_some() {
            return Err(RegistryError::InvalidReference {
                reference: reference.to_owned(),
                reason: "a push names a tag, not a digest (the digest is the manifest's, known \
                         once it is built)"
                    .to_owned(),
            });
        }
        let connection = self.connection()?;
        let target = Target::new(&image, reference, "push", connection);

        check_size(reference, "component", artifact.component.len(), COMPONENT_BYTES_MAX)?;
        check_size(reference, "config", artifact.config.len(), CONFIG_BYTES_MAX)?;
        check_config_json(reference, &artifact.config)?;

        let layer = OciDescriptor {
            media_type: WASM_LAYER_MEDIA_TYPE.to_owned(),
            digest: sha256_digest(&artifact.component),
            size: len_i64(artifact.component.len()),
            annotations: Some(BTreeMap::from([(TITLE_ANNOTATION.to_owned(), LAYER_TITLE.to_owned())])),
            ..OciDescriptor::default()
        };
        let config = OciDescriptor {
            media_type: WASM_CONFIG_MEDIA_TYPE.to_owned(),
            digest: sha256_digest(&artifact.config),
            size: len_i64(artifact.config.len()),
            ..OciDescriptor::default()
        };
        let blobs = [(&artifact.component, layer.digest.clone()), (&artifact.config, config.digest.clone())];
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
            config,
            layers: vec![layer],
            annotations: (!artifact.annotations.is_empty()).then(|| artifact.annotations.clone()),
            ..OciImageManifest::default()
        };
        // Struct fields in declaration order and `BTreeMap`s: the same artifact always gives
        // the same bytes, and so the same digest.
        let body = serde_json::to_vec(&manifest).map_err(|error| RegistryError::InvalidManifest {
            registry: target.registry.clone(),
            reference: reference.to_owned(),
            reason: format!("cannot serialize it: {error}"),
        })?;
        check_size(reference, "manifest", body.len(), MANIFEST_BYTES_MAX as u64)?;
        let digest = sha256_digest(&body);

        let client = &connection.client;
        client.store_auth_if_needed(image.resolve_registry(), &connection.auth).await;
        for (bytes, blob_digest) in blobs {
            let exists =
                client.blob_exists(&image, &blob_digest).await.map_err(|error| target.error(error, "repository"))?;
            if exists {
                tracing::debug!(reference, blob = %blob_digest, "blob already in the repository");
                continue;
            }
            client
                .push_blob(&image, bytes.clone(), &blob_digest)
                .await
                .map_err(|error| target.error(error, "repository"))?;
        }
        let Ok(content_type) = OCI_IMAGE_MEDIA_TYPE.parse() else {
            unreachable!("the OCI manifest media type is a valid header value")
        };
        let url = client
            .push_manifest_raw(&image, body, content_type)
            .await
            .map_err(|error| target.error(error, "repository"))?;
        tracing::debug!(reference, %digest, %url, "pushed");
        Ok(PushedRef { reference: format!("{}/{}@{digest}", image.registry(), image.repository()), digest, url })
    }

    /// Pulls the artifact at `reference` (`host[:port]/repository:tag` or
    /// `host[:port]/repository@sha256:<hex>`) and returns it with its manifest's digest.
    ///
    /// Verifies everything as the [crate docs](crate#verification-on-pull) describe; a
    /// manifest of another layout is refused with [`RegistryError::NotWasm`], a missing tag
    /// or repository with [`RegistryError::NotFound`].
    pub async fn pull(&self, reference: &str) -> Result<(Artifact, String), RegistryError> {
        let image = parse_reference(reference)?;
        if let Some(digest) = image.digest()
            && !is_sha256_digest(digest)
        {
            return Err(RegistryError::InvalidReference {
                reference: reference.to_owned(),
                reason: format!("the digest `{digest}` is not sha256 (the one algorithm verified here)"),
            });
        }
        let connection = self.connection()?;
        let target = Target::new(&image, reference, "pull", connection);
        let client = &connection.client;

        let (body, _) = client
            .pull_manifest_raw(&image, &connection.auth, MANIFEST_ACCEPT)
            .await
            .map_err(|error| target.error(error, "manifest"))?;
        check_size(reference, "manifest", body.len(), MANIFEST_BYTES_MAX as u64)?;
        let digest = sha256_digest(&body);
        if let Some(expected) = image.digest()
            && expected != digest
        {
            return Err(RegistryError::DigestMismatch {
                registry: target.registry,
                reference: reference.to_owned(),
                what: "manifest".to_owned(),
                expected: expected.to_owned(),
                actual: digest,
            });
        }
        let manifest = target.wasm_manifest(&body)?;

        let config = target.blob(&image, &manifest.config, "config", CONFIG_BYTES_MAX).await?;
        check_config_json(reference, &config)?;
        let component = target.blob(&image, &manifest.layer, "component", COMPONENT_BYTES_MAX).await?;
        tracing::debug!(reference, %digest, bytes = component.len(), "pulled");
        let artifact = Artifact { config, component, annotations: manifest.annotations };
        Ok((artifact, digest))
    }

    /// The tags of `repository` (`host[:port]/repository`, without a tag or digest), sorted.
    ///
    /// Follows the registry's pagination; refuses to collect more than [`TAGS_MAX`].
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        let last_segment = repository.rsplit('/').next().unwrap_or(repository);
        if repository.contains('@') || last_segment.contains(':') {
            return Err(RegistryError::InvalidReference {
                reference: repository.to_owned(),
                reason: "a tag listing names a repository, without a tag or digest".to_owned(),
            });
        }
        let image = parse_reference(repository)?;
        let connection = self.connection()?;
        let target = Target::new(&image, repository, "list tags of", connection);

        let mut tags = BTreeSet::new();
        let mut last: Option<String> = None;
        loop {
            let page = connection
                .client
                .list_tags(&image, &connection.auth, Some(TAGS_PAGE), last.as_deref())
                .await
                .map_err(|error| target.error(error, "repository"))?;
            let page_len = page.tags.len();
            let before = tags.len();
            tags.extend(page.tags);
            if tags.len() > TAGS_MAX {
                return Err(RegistryError::TooLarge {
                    reference: repository.to_owned(),
                    what: "tag list",
                    limit: TAGS_MAX as u64,
                    detail: format!("more than {TAGS_MAX} tags"),
                });
            }
            // A short page is the last; a page with nothing new means the registry ignores
            // pagination (and sent everything at once) or is going round in circles.
            if page_len < TAGS_PAGE || tags.len() == before {
                break;
            }
            last = tags.last().cloned();
        }
        Ok(tags.into_iter().collect())
    }

    fn connection(&self) -> Result<&Connection, RegistryError> {
        self.client.as_ref().map_err(|reason| RegistryError::Options { reason: reason.clone() })
    }
}

/// One operation on one reference: what errors name, and the steps of a pull.
struct Target<'a> {
    registry: String,
    reference: &'a str,
    operation: &'static str,
    connection: &'a Connection,
}

impl<'a> Target<'a> {
    fn new(image: &Reference, reference: &'a str, operation: &'static str, connection: &'a Connection) -> Self {
        Target { registry: image.registry().to_owned(), reference, operation, connection }
    }

    /// Parses a manifest and checks it is the CNCF Wasm layout with sha256 digests.
    fn wasm_manifest(&self, body: &[u8]) -> Result<WasmManifest, RegistryError> {
        /// Just enough of any manifest to tell the kinds apart.
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Kind {
            schema_version: Option<i64>,
            media_type: Option<String>,
            manifests: Option<serde::de::IgnoredAny>,
        }
        let invalid = |reason: String| RegistryError::InvalidManifest {
            registry: self.registry.clone(),
            reference: self.reference.to_owned(),
            reason,
        };
        let not_wasm = |reason: String| RegistryError::NotWasm {
            registry: self.registry.clone(),
            reference: self.reference.to_owned(),
            reason,
        };

        let kind: Kind =
            serde_json::from_slice(body).map_err(|error| invalid(format!("not a JSON manifest: {error}")))?;
        match kind.media_type.as_deref() {
            Some(index @ (OCI_IMAGE_INDEX_MEDIA_TYPE | IMAGE_MANIFEST_LIST_MEDIA_TYPE)) => {
                return Err(not_wasm(format!("it is an image index ({index}), a list of manifests, not one artifact")));
            }
            None if kind.manifests.is_some() => {
                return Err(not_wasm("it is an image index (it lists `manifests`), not one artifact".to_owned()));
            }
            Some(OCI_IMAGE_MEDIA_TYPE) | None => {}
            Some(other) => {
                return Err(not_wasm(format!("its media type is {other}, not {OCI_IMAGE_MEDIA_TYPE}")));
            }
        }
        if kind.schema_version != Some(2) {
            return Err(invalid(format!("schemaVersion is {:?}, not 2", kind.schema_version)));
        }
        let manifest: OciImageManifest =
            serde_json::from_slice(body).map_err(|error| invalid(format!("not an OCI image manifest: {error}")))?;

        if manifest.config.media_type != WASM_CONFIG_MEDIA_TYPE {
            return Err(not_wasm(format!("its config media type is {}", manifest.config.media_type)));
        }
        let layers_len = manifest.layers.len();
        let OciImageManifest { config, layers, annotations, .. } = manifest;
        let Ok([layer]) = <[OciDescriptor; 1]>::try_from(layers) else {
            return Err(not_wasm(format!("it has {} layers", layers_len)));
        };
        if layer.media_type != WASM_LAYER_MEDIA_TYPE {
            return Err(not_wasm(format!("its layer's media type is {}", layer.media_type)));
        }
        for (what, descriptor) in [("config", &config), ("layer", &layer)] {
            if !is_sha256_digest(&descriptor.digest) {
                return Err(invalid(format!(
                    "the {what} digest `{}` is not `sha256:` and 64 lowercase hex digits (the \
                     one algorithm verified here)",
                    descriptor.digest
                )));
            }
        }
        Ok(WasmManifest { config, layer, annotations: annotations.unwrap_or_default() })
    }

    /// Fetches one blob of the manifest, bounded by its declared size and `limit`, and
    /// verified against its digest.
    async fn blob(
        &self,
        image: &Reference,
        descriptor: &OciDescriptor,
        what: &'static str,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let declared = u64::try_from(descriptor.size).map_err(|_| RegistryError::InvalidManifest {
            registry: self.registry.clone(),
            reference: self.reference.to_owned(),
            reason: format!("the {what} size {} is negative", descriptor.size),
        })?;
        if declared > limit {
            return Err(RegistryError::TooLarge {
                reference: self.reference.to_owned(),
                what,
                limit,
                detail: format!("the manifest declares {declared} bytes"),
            });
        }
        let mut sink = BoundedSink::new(declared);
        let pulled = self.connection.client.pull_blob(image, descriptor, &mut sink).await;
        let size_mismatch = |cut_off: bool| RegistryError::SizeMismatch {
            registry: self.registry.clone(),
            reference: self.reference.to_owned(),
            what,
            declared,
            actual: sink.offered,
            cut_off,
        };
        if sink.overflowed {
            return Err(size_mismatch(true));
        }
        pulled.map_err(|error| self.error(error, &format!("{what} blob {}", descriptor.digest)))?;
        if sink.offered != declared {
            return Err(size_mismatch(false));
        }
        let actual = format!("sha256:{}", hex::encode(sink.hasher.finalize()));
        if actual != descriptor.digest {
            return Err(RegistryError::DigestMismatch {
                registry: self.registry.clone(),
                reference: self.reference.to_owned(),
                what: what.to_owned(),
                expected: descriptor.digest.clone(),
                actual,
            });
        }
        Ok(sink.bytes)
    }

    /// Sorts an `oci-client` error into the variant a caller can act on. `what` names what
    /// was looked up, for [`RegistryError::NotFound`].
    fn error(&self, error: OciDistributionError, what: &str) -> RegistryError {
        let not_found = || RegistryError::NotFound {
            registry: self.registry.clone(),
            reference: self.reference.to_owned(),
            what: what.to_owned(),
        };
        let unauthorized = |reason: String| RegistryError::Unauthorized {
            registry: self.registry.clone(),
            reference: self.reference.to_owned(),
            operation: self.operation,
            reason,
        };
        match &error {
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes = || envelope.errors.iter().map(|e| &e.code);
                if codes().any(|code| {
                    matches!(
                        code,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    return not_found();
                }
                if codes().any(|code| matches!(code, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                    return unauthorized(envelope.to_string());
                }
            }
            OciDistributionError::ServerError { code: 404, .. } => return not_found(),
            OciDistributionError::ServerError { code: 401 | 403, message, .. } => return unauthorized(message.clone()),
            OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => {
                return unauthorized(causes(&error));
            }
            OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
                return RegistryError::DigestMismatch {
                    registry: self.registry.clone(),
                    reference: self.reference.to_owned(),
                    what: what.to_owned(),
                    expected: expected.clone(),
                    actual: actual.clone(),
                };
            }
            _ => {}
        }
        let mut reason = causes(&error);
        if matches!(error, OciDistributionError::RequestError(_))
            && !self.connection.insecure_http.contains(&self.registry)
        {
            reason.push_str(&format!(" (if {} serves plain HTTP, list it in `insecure_http`)", self.registry));
        }
        RegistryError::Registry {
            registry: self.registry.clone(),
            reference: self.reference.to_owned(),
            operation: self.operation,
            reason,
        }
    }
}

/// The parts of a manifest checked to be in the CNCF Wasm layout.
struct WasmManifest {
    config: OciDescriptor,
    layer: OciDescriptor,
    annotations: BTreeMap<String, String>,
}

/// Collects a blob in memory: hashes it as it arrives and refuses any byte past `limit`.
struct BoundedSink {
    bytes: Vec<u8>,
    hasher: Sha256,
    limit: u64,
    /// Bytes offered so far, including those refused.
    offered: u64,
    overflowed: bool,
}

impl BoundedSink {
    fn new(limit: u64) -> Self {
        BoundedSink {
            // `limit` is within the crate's limits already; the buffer never grows past it.
            bytes: Vec::with_capacity(usize::try_from(limit).unwrap_or(0)),
            hasher: Sha256::new(),
            limit,
            offered: 0,
            overflowed: false,
        }
    }
}

impl tokio::io::AsyncWrite for BoundedSink {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.offered = this.offered.saturating_add(buf.len() as u64);
        if this.offered > this.limit {
            this.overflowed = true;
            return Poll::Ready(Err(std::io::Error::other("the blob is longer than its declared size")));
        }
        this.hasher.update(buf);
        this.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn parse_reference(reference: &str) -> Result<Reference, RegistryError> {
    Reference::from_str(reference)
        .map_err(|error| RegistryError::InvalidReference { reference: reference.to_owned(), reason: error.to_string() })
}

fn check_size(reference: &str, what: &'static str, bytes: usize, limit: u64) -> Result<(), RegistryError> {
    if bytes as u64 > limit {
        return Err(RegistryError::TooLarge {
            reference: reference.to_owned(),
            what,
            limit,
            detail: format!("it is {bytes} bytes"),
        });
    }
    Ok(())
}

fn check_config_json(reference: &str, config: &[u8]) -> Result<(), RegistryError> {
    match serde_json::from_slice::<serde_json::Value>(config) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(RegistryError::InvalidConfig {
            reference: reference.to_owned(),
            reason: "it is JSON, but not an object".to_owned(),
        }),
        Err(error) => Err(RegistryError::InvalidConfig { reference: reference.to_owned(), reason: error.to_string() }),
    }
}

/// `sha256:` and 64 lowercase hex digits. Besides naming the one algorithm verified here, this
/// keeps a peer's digest from putting anything else into a URL path.
fn is_sha256_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// A length for an OCI descriptor; lengths here are bounded far below `i64::MAX`.
fn len_i64(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

/// An error and its chain of causes, `outer: inner: innermost` (a cause whose text the outer
/// message already holds is not repeated).
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lowercase_sha256_digests_pass() {
        let hex = "a".repeat(64);
        assert!(is_sha256_digest(&format!("sha256:{hex}")));
        assert!(!is_sha256_digest(&format!("sha256:{}", "A".repeat(64))));
        assert!(!is_sha256_digest(&format!("sha512:{hex}")));
        assert!(!is_sha256_digest("sha256:../../etc"));
        assert!(!is_sha256_digest(&format!("sha256:{hex}0")));
    }

    #[test]
    fn a_username_without_a_password_is_refused_on_use() {
        let registry = OciRegistry::new(OciOptions { username: Some("flumen".to_owned()), ..OciOptions::default() });
        let error = registry.connection().err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("the OCI registry options are unusable: a username is set without a password")
        );
    }

    #[test]
    fn tags_refuses_a_reference_with_a_tag() {
        let registry = OciRegistry::new(OciOptions::default());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let error = runtime.block_on(registry.tags("127.0.0.1:5000/flumen/op:1")).expect_err("a tag is refused");
        assert!(matches!(error, RegistryError::InvalidReference { .. }), "{error}");
    }
}
