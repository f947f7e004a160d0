//! The trust policy: which public keys may vouch for which package names, read from a trust
//! file, and the check that decides whether a package may run.
//!
//! # The check
//!
//! 1. Every signature is first checked against the package without a key: the algorithm is
//!    `ed25519` and the record names this package's digest, name and version. A record that
//!    names another digest means the manifest changed after signing: [`TrustError::BadSignature`].
//! 2. A signature whose key the policy lists is verified with that key. A failure is
//!    [`TrustError::BadSignature`]: the package or the signature was altered.
//! 3. Steps 1 and 2 refuse even when `allow_unsigned` is set: evidence of tampering is never
//!    waved through.
//! 4. A verified signature by a key whose `packages` patterns match the package name makes the
//!    package trusted ([`TrustedBy::Key`], naming the first such key in policy order).
//! 5. Otherwise the package is not vouched for: with `allow_unsigned` it is accepted as
//!    [`TrustedBy::Unsigned`]; without, the error says why — no signatures
//!    ([`TrustError::Unsigned`]), only keys the policy does not list
//!    ([`TrustError::UntrustedKey`]), or listed keys not allowed to sign this name
//!    ([`TrustError::KeyNotAllowed`]).

use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::fsio::{self, ReadError};
use crate::package::Package;
use crate::sign::{KeyError, PublicKey, SignatureError};

/// The most bytes of a trust file.
pub const TRUST_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Which keys vouch for which packages; fail-closed by default (no keys, no unsigned packages).
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    allow_unsigned: bool,
    keys: Vec<TrustedKey>,
}

/// One key of a trust policy.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// A label for messages (`acme`).
    pub name: String,
    pub public_key: PublicKey,
    /// Glob patterns of the package names this key may sign.
    pub packages: Vec<glob::Pattern>,
}

/// Why a policy lets a package run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedBy {
    /// A signature verified under this key, which may sign this package.
    Key { name: String, key_id: String },
    /// Nothing vouches for the package, and the policy allows that.
    Unsigned,
}

/// Why a policy refuses a package. `package` is `name@version (digest)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error(
        "package {package} is unsigned and the trust policy requires a signature: sign it with a key the \
         trust file lists, or set `allow_unsigned = true` in the trust file for development"
    )]
    Unsigned { package: String },
    #[error(
        "package {package} is signed only by keys the trust policy does not list ({}); add the publisher's \
         public key to the trust file if you trust it",
        key_ids.join(", ")
    )]
    UntrustedKey { package: String, key_ids: Vec<String> },
    #[error(
        "package {package} is signed by trusted key(s) {} that may not sign `{name}`; widen that key's \
         `packages` patterns in the trust file if it should",
        keys.join(", ")
    )]
    KeyNotAllowed { package: String, name: String, keys: Vec<String> },
    #[error(
        "package {package} has a bad signature by key {key_id}: {reason}; refusing it (it was altered after signing)"
    )]
    BadSignature { package: String, key_id: String, reason: SignatureError },
}

/// A trust file that cannot be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum TrustPolicyError {
    #[error("cannot read trust file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("trust file {} is {size} bytes; the most is {TRUST_FILE_BYTES_MAX}", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Toml { path: PathBuf, line: Option<usize>, message: String },
    #[error("trust file {}, key `{key}`: {message}", path.display())]
    Key { path: PathBuf, key: String, message: String },
    #[error("key `{key}`: {source}")]
    KeyFile { key: String, source: KeyError },
    #[error("key `{key}`: `{pattern}` is not a glob pattern: {message}")]
    Pattern { key: String, pattern: String, message: String },
}

impl TrustPolicy {
    /// Reads a trust file. Key paths are relative to the trust file's directory.
    pub fn from_file(path: &Path) -> Result<TrustPolicy, TrustPolicyError> {
        let text = fsio::read_text_limited(path, TRUST_FILE_BYTES_MAX).map_err(|e| match e {
            ReadError::Io(source) => TrustPolicyError::Read { path: path.to_path_buf(), source },
            ReadError::TooLarge { size } => TrustPolicyError::TooLarge { path: path.to_path_buf(), size },
        })?;
        let file: TrustFile = toml::from_str(&text).map_err(|e| TrustPolicyError::Toml {
            path: path.to_path_buf(),
            line: fsio::toml_error_line(&text, &e),
            message: e.message().trim_end().to_owned(),
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        let mut policy = TrustPolicy::default().allow_unsigned(file.allow_unsigned);
        for key in file.key {
            let key_error =
                |message: String| TrustPolicyError::Key { path: path.to_path_buf(), key: key.name.clone(), message };
            let public_key = match (&key.public_key, &key.public_key_pem) {
                (Some(file), None) => PublicKey::from_pem_file(&base.join(file))
                    .map_err(|source| TrustPolicyError::KeyFile { key: key.name.clone(), source })?,
                (None, Some(pem)) => {
                    PublicKey::from_pem_str(pem).map_err(|e| key_error(format!("`public_key_pem`: {e}")))?
                }
                _ => return Err(key_error("set exactly one of `public_key` (a file) and `public_key_pem`".to_owned())),
            };
            let patterns: Vec<&str> = key.packages.iter().map(String::as_str).collect();
            policy = policy.with_key(&key.name, public_key, &patterns)?;
        }
        Ok(policy)
    }

    /// Accepts packages nothing vouches for (development). Bad signatures are still refused.
    pub fn allow_unsigned(mut self, allow: bool) -> TrustPolicy {
        self.allow_unsigned = allow;
        self
    }

    /// Adds a key that may sign the package names matching `packages` (glob patterns).
    pub fn with_key(
        mut self,
        name: &str,
        public_key: PublicKey,
        packages: &[&str],
    ) -> Result<TrustPolicy, TrustPolicyError> {
        let packages = packages
            .iter()
            .map(|p| {
                glob::Pattern::new(p).map_err(|e| TrustPolicyError::Pattern {
                    key: name.to_owned(),
                    pattern: (*p).to_owned(),
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.keys.push(TrustedKey { name: name.to_owned(), public_key, packages });
        Ok(self)
    }

    pub fn allows_unsigned(&self) -> bool {
        self.allow_unsigned
    }

    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// Decides whether `pkg` may run (see the module docs for the order of the checks).
    pub fn check(&self, pkg: &Package) -> Result<TrustedBy, TrustError> {
        let manifest = pkg.manifest();
        let package = format!("{} ({})", manifest.id(), pkg.digest());
        let bad = |key_id: &str, reason| TrustError::BadSignature {
            package: package.clone(),
            key_id: key_id.to_owned(),
            reason,
        };

        let mut not_allowed: Vec<String> = Vec::new();
        let mut untrusted: Vec<String> = Vec::new();
        for signature in pkg.signatures() {
            signature
                .matches(pkg.digest(), &manifest.name, &manifest.version)
                .map_err(|e| bad(&signature.key_id, e))?;
            let mut listed = false;
            for key in self.keys.iter().filter(|k| k.public_key.key_id() == signature.key_id) {
                listed = true;
                signature
                    .verify(pkg.digest(), &manifest.name, &manifest.version, &key.public_key)
                    .map_err(|e| bad(&signature.key_id, e))?;
                if !key.packages.iter().any(|p| p.matches(&manifest.name)) {
                    not_allowed.push(format!("`{}` ({})", key.name, signature.key_id));
                }
            }
            if !listed {
                untrusted.push(signature.key_id.clone());
            }
        }
        // Every signature by a listed key verified above; the first key in policy order that
        // signed and may sign this name is the one named.
        let vouching = self.keys.iter().find(|k| {
            k.packages.iter().any(|p| p.matches(&manifest.name))
                && pkg.signatures().iter().any(|s| s.key_id == k.public_key.key_id())
        });
        if let Some(key) = vouching {
            return Ok(TrustedBy::Key { name: key.name.clone(), key_id: key.public_key.key_id() });
        }
        if self.allow_unsigned {
            return Ok(TrustedBy::Unsigned);
        }
        if !not_allowed.is_empty() {
            return Err(TrustError::KeyNotAllowed { package, name: manifest.name.clone(), keys: not_allowed });
        }
        if !untrusted.is_empty() {
            return Err(TrustError::UntrustedKey { package, key_ids: untrusted });
        }
        Err(TrustError::Unsigned { package })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    #[serde(default)]
    allow_unsigned: bool,
    #[serde(default)]
    key: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    #[serde(default)]
    public_key: Option<PathBuf>,
    #[serde(default)]
    public_key_pem: Option<String>,
    #[serde(default = "all_packages")]
    packages: Vec<String>,
}

fn all_packages() -> Vec<String> {
    vec!["*".to_owned()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;
    use crate::package::tests::build;

    fn signed(name: &str, keys: &[&SigningKey]) -> Package {
        let mut pkg = build(name, "1.0.0", b"component");
        for key in keys {
            pkg.sign(key);
        }
        pkg
    }

    #[test]
    fn a_trusted_key_vouches_for_the_names_it_may_sign() {
        let acme = SigningKey::generate().unwrap();
        let policy = TrustPolicy::default().with_key("acme", acme.public_key(), &["acme-*", "upper"]).unwrap();
        let expected = TrustedBy::Key { name: "acme".to_owned(), key_id: acme.key_id() };
        assert_eq!(policy.check(&signed("upper", &[&acme])), Ok(expected.clone()));
        assert_eq!(policy.check(&signed("acme-join", &[&acme])), Ok(expected));
    }

    #[test]
    fn unsigned_is_refused_by_default_and_allowed_on_request() {
        let pkg = signed("upper", &[]);
        let err = TrustPolicy::default().check(&pkg).unwrap_err();
        assert!(matches!(err, TrustError::Unsigned { .. }), "{err}");
        assert!(err.to_string().contains("upper@1.0.0") && err.to_string().contains("allow_unsigned"), "{err}");
        assert_eq!(TrustPolicy::default().allow_unsigned(true).check(&pkg), Ok(TrustedBy::Unsigned));
    }

    #[test]
    fn a_key_the_policy_does_not_list_is_named() {
        let stranger = SigningKey::generate().unwrap();
        let acme = SigningKey::generate().unwrap();
        let policy = TrustPolicy::default().with_key("acme", acme.public_key(), &["*"]).unwrap();
        let err = policy.check(&signed("upper", &[&stranger])).unwrap_err();
        assert_eq!(err, TrustError::UntrustedKey { package: err_package(&err), key_ids: vec![stranger.key_id()] });
        assert!(err.to_string().contains(&stranger.key_id()), "{err}");
        // A development policy runs it as unsigned.
        assert_eq!(policy.allow_unsigned(true).check(&signed("upper", &[&stranger])), Ok(TrustedBy::Unsigned));
    }

    #[test]
    fn a_trusted_key_outside_its_patterns_is_refused() {
        let acme = SigningKey::generate().unwrap();
        let policy = TrustPolicy::default().with_key("acme", acme.public_key(), &["acme-*"]).unwrap();
        let err = policy.check(&signed("upper", &[&acme])).unwrap_err();
        assert!(matches!(&err, TrustError::KeyNotAllowed { name, .. } if name == "upper"), "{err}");
        assert!(err.to_string().contains("`acme`"), "{err}");
    }

    #[test]
    fn one_good_signature_among_strangers_is_enough() {
        let (acme, stranger) = (SigningKey::generate().unwrap(), SigningKey::generate().unwrap());
        let policy = TrustPolicy::default().with_key("acme", acme.public_key(), &["*"]).unwrap();
        let by = policy.check(&signed("upper", &[&stranger, &acme])).unwrap();
        assert_eq!(by, TrustedBy::Key { name: "acme".to_owned(), key_id: acme.key_id() });
    }

    #[test]
    fn tampered_manifest_is_a_bad_signature_even_when_unsigned_is_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let acme = SigningKey::generate().unwrap();
        signed("upper", &[&acme]).write_dir(dir.path()).unwrap();

        // Someone edits the manifest (keeping it canonical, and the component untouched).
        let path = dir.path().join(crate::package::MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("The upper operator", "The upper operator, now harmless")).unwrap();
        let tampered = Package::read_dir(dir.path()).unwrap();

        let policy = TrustPolicy::default().with_key("acme", acme.public_key(), &["*"]).unwrap();
        for policy in [policy.clone(), policy.allow_unsigned(true), TrustPolicy::default().allow_unsigned(true)] {
            let err = policy.check(&tampered).unwrap_err();
            assert!(matches!(&err, TrustError::BadSignature { reason: SignatureError::Digest { .. }, .. }), "{err}");
        }
    }

    #[test]
    fn a_forged_signature_under_a_trusted_key_is_a_bad_signature() {
        let acme = SigningKey::generate().unwrap();
        let mallory = SigningKey::generate().unwrap();
        let mut pkg = signed("upper", &[&mallory]);
        // Mallory's signature relabelled as acme's.
        let mut forged = pkg.signatures()[0].clone();
        forged.key_id = acme.key_id();
        pkg.add_signature(forged);
        let policy = TrustPolicy::default().with_key("acme", acme.public_key(), &["*"]).unwrap().allow_unsigned(true);
        let err = policy.check(&pkg).unwrap_err();
        assert!(matches!(&err, TrustError::BadSignature { reason: SignatureError::Invalid { .. }, .. }), "{err}");
    }

    #[test]
    fn trust_file_with_key_paths_and_inline_pem() {
        let dir = tempfile::tempdir().unwrap();
        let (acme, beta) = (SigningKey::generate().unwrap(), SigningKey::generate().unwrap());
        acme.write_pem_files(&dir.path().join("acme.pem"), &dir.path().join("acme.pub.pem")).unwrap();
        let trust = dir.path().join("trust.toml");
        std::fs::write(
            &trust,
            format!(
                "[[key]]\nname = \"acme\"\npublic_key = \"acme.pub.pem\"\npackages = [\"acme-*\", \"upper\"]\n\n\
                 [[key]]\nname = \"beta\"\npublic_key_pem = \"\"\"\n{}\"\"\"\n",
                beta.public_key().to_pem()
            ),
        )
        .unwrap();
        let policy = TrustPolicy::from_file(&trust).unwrap();
        assert!(!policy.allows_unsigned());
        assert_eq!(policy.keys().len(), 2);
        assert_eq!(policy.keys()[1].packages, vec![glob::Pattern::new("*").unwrap()]);
        assert!(matches!(policy.check(&signed("upper", &[&acme])), Ok(TrustedBy::Key { name, .. }) if name == "acme"));
        assert!(matches!(policy.check(&signed("lower", &[&acme])), Err(TrustError::KeyNotAllowed { .. })));
        assert!(matches!(policy.check(&signed("lower", &[&beta])), Ok(TrustedBy::Key { name, .. }) if name == "beta"));
    }

    #[test]
    fn trust_file_errors_name_the_file_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let trust = dir.path().join("trust.toml");
        let write = |text: &str| std::fs::write(&trust, text).unwrap();

        write("allow_unsigned = false\n[[key]]\nname = \"acme\"\npublic_key = \"x.pem\"\ncolour = 1\n");
        let err = TrustPolicy::from_file(&trust).unwrap_err();
        assert!(err.to_string().contains("trust.toml:5:") && err.to_string().contains("colour"), "{err}");

        std::fs::File::create(&trust).unwrap().set_len(TRUST_FILE_BYTES_MAX + 1).unwrap();
        assert!(matches!(TrustPolicy::from_file(&trust), Err(TrustPolicyError::TooLarge { .. })));

        write("[[key]]\nname = \"acme\"\n");
        let err = TrustPolicy::from_file(&trust).unwrap_err();
        assert!(err.to_string().contains("key `acme`") && err.to_string().contains("exactly one"), "{err}");

        write("[[key]]\nname = \"acme\"\npublic_key = \"missing.pub.pem\"\n");
        let err = TrustPolicy::from_file(&trust).unwrap_err();
        assert!(err.to_string().contains("missing.pub.pem") && err.to_string().contains("`acme`"), "{err}");

        write("[[key]]\nname = \"acme\"\npublic_key_pem = \"nonsense\"\n");
        let err = TrustPolicy::from_file(&trust).unwrap_err();
        assert!(err.to_string().contains("public_key_pem"), "{err}");

        let pem = SigningKey::generate().unwrap().public_key().to_pem();
        write(&format!("[[key]]\nname = \"acme\"\npublic_key_pem = \"\"\"\n{pem}\"\"\"\npackages = [\"[\"]\n"));
        let err = TrustPolicy::from_file(&trust).unwrap_err();
        assert!(matches!(err, TrustPolicyError::Pattern { .. }), "{err}");
    }

    fn err_package(err: &TrustError) -> String {
        match err {
            TrustError::Unsigned { package }
            | TrustError::UntrustedKey { package, .. }
            | TrustError::KeyNotAllowed { package, .. }
            | TrustError::BadSignature { package, .. } => package.clone(),
        }
    }
}
