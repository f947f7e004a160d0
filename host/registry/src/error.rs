//! The errors of pushing, pulling and listing operator packages in OCI registries.

use crate::{WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};

/// Why a push, pull or tag listing failed.
///
/// Every variant names the registry (`host[:port]`) and the reference or repository it was
/// working on, so a message alone is enough to act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The reference could not be parsed, or names something this operation cannot use.
    #[error(
        "`{reference}` is not a usable OCI reference: {reason} (write `host[:port]/repository:tag` \
         or `host[:port]/repository@sha256:<64 hex digits>`)"
    )]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The [`OciOptions`](crate::OciOptions) cannot make a client.
    #[error("the OCI registry options are unusable: {reason}")]
    Options {
        /// What is wrong with them.
        reason: String,
    },

    /// The registry has no such manifest, repository or blob.
    #[error(
        "registry {registry} has no {what} for `{reference}`: check the repository and tag (or \
         digest), and that it was pushed to this registry"
    )]
    NotFound {
        /// The registry, `host[:port]`.
        registry: String,
        /// The reference or repository looked up.
        reference: String,
        /// What was missing: "manifest", "repository", "blob sha256:…".
        what: String,
    },

    /// The registry refused the credentials, or asked for some and none were configured.
    #[error(
        "registry {registry} refused access to `{reference}` ({reason}): set the username and \
         password in the registry options, and check that this account may {operation} it"
    )]
    Unauthorized {
        /// The registry, `host[:port]`.
        registry: String,
        /// The reference or repository.
        reference: String,
        /// "push", "pull" or "list tags of".
        operation: &'static str,
        /// What the registry said.
        reason: String,
    },

    /// The manifest is well formed but is not a Wasm component in the CNCF layout.
    #[error(
        "`{reference}` on registry {registry} is not a Wasm component in the CNCF layout \
         (an OCI image manifest with config media type {WASM_CONFIG_MEDIA_TYPE} and exactly one \
         layer of media type {WASM_LAYER_MEDIA_TYPE}): {reason}"
    )]
    NotWasm {
        /// The registry, `host[:port]`.
        registry: String,
        /// The reference pulled.
        reference: String,
        /// Which part of the manifest differs.
        reason: String,
    },

    /// The registry sent a manifest that is not valid JSON in the OCI shape.
    #[error("registry {registry} sent a malformed manifest for `{reference}`: {reason}")]
    InvalidManifest {
        /// The registry, `host[:port]`.
        registry: String,
        /// The reference pulled.
        reference: String,
        /// What is malformed.
        reason: String,
    },

    /// A config (pushed or pulled) is not a JSON object, as its media type promises.
    #[error(
        "the config of `{reference}` is not a JSON object ({reason}); build it with \
         `wasm_config`"
    )]
    InvalidConfig {
        /// The reference pushed or pulled.
        reference: String,
        /// What the JSON parser said.
        reason: String,
    },

    /// Something is over one of this crate's size limits (see the `*_MAX` constants).
    #[error(
        "the {what} of `{reference}` is larger than the limit of {limit} bytes ({detail}); \
         refusing it"
    )]
    TooLarge {
        /// The reference pushed or pulled, or the repository listed.
        reference: String,
        /// What is too large: "manifest", "config", "component", "tag list".
        what: &'static str,
        /// The limit, in bytes (entries, for a tag list).
        limit: u64,
        /// How large it is, or was declared to be.
        detail: String,
    },

    /// Content did not hash to the digest that names it.
    #[error(
        "registry {registry} sent a {what} for `{reference}` whose digest is {actual}, not the \
         expected {expected}: the content was corrupted or substituted on the way, so it is not \
         used"
    )]
    DigestMismatch {
        /// The registry, `host[:port]`.
        registry: String,
        /// The reference pulled.
        reference: String,
        /// "manifest", "config", "component", or the blob by digest.
        what: String,
        /// The digest the manifest or the reference names.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },

    /// A blob's length differs from the size its descriptor declares.
    #[error(
        "registry {registry} sent a {what} of {actual}{} bytes for `{reference}` where the \
         manifest declares {declared}: it is not used",
        if *.cut_off { " or more" } else { "" }
    )]
    SizeMismatch {
        /// The registry, `host[:port]`.
        registry: String,
        /// The reference pulled.
        reference: String,
        /// "config" or "component".
        what: &'static str,
        /// The size in the manifest.
        declared: u64,
        /// The bytes received; a lower bound when `cut_off`.
        actual: u64,
        /// Whether the download was stopped for running past `declared`.
        cut_off: bool,
    },

    /// Any other failure talking to the registry: connection, TLS, protocol, server error.
    #[error("could not {operation} `{reference}` on registry {registry}: {reason}")]
    Registry {
        /// The registry, `host[:port]`.
        registry: String,
        /// The reference or repository.
        reference: String,
        /// "push", "pull" or "list tags of".
        operation: &'static str,
        /// The cause, with its chain of causes.
        reason: String,
    },
}
