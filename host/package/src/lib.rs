//! Operator packages: the manifest, content digests, ed25519 signatures, the trust policy, the
//! directory registry, plugin references and lockfiles. A pure library: no network, no Wasm
//! runtime (whoever builds a package inspects the component and passes in what it targets).
//!
//! This documentation is the reference for the formats; another implementation can read and
//! verify packages from it alone.
//!
//! # `package.toml` (what an author writes)
//!
//! ```toml
//! name = "upper"                   # [a-z][a-z0-9_-]*, at most 64 characters
//! version = "1.2.0"                # semver
//! description = "Upper-cases text"
//! license = "Apache-2.0"           # optional
//! capabilities = ["log", "state"]  # optional, default ["log"]; of log, state, blobs, inference
//! state_schema = 1                 # optional, default 1: the layout version of the operator's state
//! migrates_from = []               # optional: older state_schema versions it can restore from
//! [resources]                      # optional: cores (u32), memory_mb (u64), gpu (u32)
//! [config_schema]                  # optional: a JSON Schema (written as TOML) for the config
//! ```
//!
//! Unknown keys are refused. [`PackageSource::from_toml_file`] reads it.
//!
//! # A package directory
//!
//! ```text
//! manifest.json              the manifest, canonical JSON (below)
//! component.wasm             the component
//! signatures/<key-id>.json   zero or more signature records, one per key
//! ```
//!
//! `manifest.json` holds every `package.toml` field with its default applied, plus
//! `"wit"` (the WIT package the component targets, e.g. `"flumen:dataflow@0.2.0"`) and
//! `"component": {"digest": "sha256:<64 hex>", "size": <bytes>}`. `license`, `config_schema`
//! and `resources` (and each resource) are left out when not set; every other field is always
//! present. [`Package::read_dir`] refuses a directory whose component does not have the
//! manifest's size and digest, and a `manifest.json` that is not canonical.
//!
//! # Digests
//!
//! 1. A digest is `sha256:` followed by the 64 lowercase hex digits of a SHA-256.
//! 2. The component digest is the digest of the bytes of `component.wasm`.
//! 3. The package digest is the digest of the bytes of `manifest.json`, which is the manifest
//!    written as canonical JSON ([`digest`] numbers the rules: sorted keys at every depth, no
//!    whitespace, JSON string escapes, numbers in plain decimal). The manifest names the
//!    component digest, so the package digest covers the component too. Signatures are not
//!    part of it: signing does not change a package's identity.
//!
//! # Keys
//!
//! Ed25519. The private key file is PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), what
//! `openssl genpkey -algorithm ed25519` writes; the public key file is SPKI PEM
//! (`-----BEGIN PUBLIC KEY-----`), what `openssl pkey -pubout` writes. A key's id is the first
//! 16 hex digits of the SHA-256 of its 32 raw public key bytes.
//!
//! # Signature records (`signatures/<key-id>.json`)
//!
//! ```json
//! { "algorithm": "ed25519", "key_id": "<16 hex>", "package": "sha256:<package digest>",
//!   "name": "upper", "version": "1.2.0", "signature": "<base64 of 64 bytes>" }
//! ```
//!
//! The signature is over the bytes `flumen-package-signature-v1\n<name>\n<version>\n<package
//! digest>` (UTF-8, no final newline); see [`sign`]. The base64 is the standard alphabet with
//! padding.
//!
//! # The trust file
//!
//! ```toml
//! allow_unsigned = false           # optional, default false (fail-closed)
//! [[key]]
//! name = "acme"                    # a label for messages
//! public_key = "acme.pub.pem"      # relative to the trust file; or public_key_pem = "-----BEGIN…"
//! packages = ["acme-*", "upper"]   # glob patterns of the names it may sign (default ["*"])
//! ```
//!
//! [`TrustPolicy::check`] accepts a package when a signature verifies under a listed key whose
//! patterns match its name; [`trust`] gives the order of the checks. A signature that names
//! another digest or does not verify is refused even when `allow_unsigned` is set.
//!
//! # References and the lockfile
//!
//! A job names a plugin as `name@1.2.0` (exactly that version), `name@^1.2` (a semver
//! requirement), `name@sha256:<64 hex>` (one package digest) or a bare `name` (not a package:
//! the caller's plain-file lookup). A requirement runs only through a lock entry in
//! `flumen.lock` beside the job file:
//!
//! ```toml
//! version = 1
//! [[package]]
//! name = "upper"
//! requirement = "^1"               # the text the job wrote
//! version = "1.2.0"
//! digest = "sha256:…"              # the package digest
//! source = "dir:…"                 # where it was resolved (free text, e.g. oci://host:port/repo)
//! ```
//!
//! # The directory registry
//!
//! `<root>/<name>/<version>/` holds a package directory and `<root>/by-digest/<64 hex>` the
//! text `<name>/<version>`; see [`registry`] for how publishing keeps versions immutable.

pub mod digest;
mod fsio;
pub mod lock;
pub mod manifest;
pub mod package;
pub mod reference;
pub mod registry;
pub mod sign;
pub mod trust;

pub use digest::{canonical_json, content_digest, is_digest};
pub use lock::{LockError, LockedPackage, Lockfile, PinnedRef};
pub use manifest::{Capability, ComponentRef, ConfigErrors, ConfigViolation, Manifest, PackageSource, Resources};
pub use package::{COMPONENT_BYTES_MAX, MANIFEST_BYTES_MAX, Package, PackageError};
pub use reference::{PluginRef, ReferenceError};
pub use registry::{DirRegistry, PackageSummary, RegistryError};
pub use sign::{KeyError, KeyKind, PublicKey, Signature, SignatureError, SigningKey};
pub use trust::{TrustError, TrustPolicy, TrustPolicyError, TrustedBy, TrustedKey};
