//! How a job names a plugin: `name@<version requirement>`, `name@sha256:<digest>`, or a bare
//! name that is not a package reference at all (callers keep their lookup of plain files).

use std::fmt;

use semver::{Version, VersionReq};

use crate::digest::{DIGEST_PREFIX, digest_problem, is_digest};
use crate::manifest::check_name;

/// A parsed plugin reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginRef {
    /// No `@`: not a package reference. The text is kept as written.
    Bare(String),
    /// `name@<requirement>`: resolved through a lockfile. `text` is the requirement as the job
    /// wrote it (`1.2.0`, `^1.2`); a plain version means exactly that version.
    Version { name: String, requirement: VersionReq, text: String },
    /// `name@sha256:<64 hex>`: pinned to one package digest.
    Digest { name: String, digest: String },
}

/// A reference with an `@` that is not a valid package reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{reference}` is not a package reference (`name@1.2.0`, `name@^1.2`, `name@sha256:<64 hex>`): {problem}")]
pub struct ReferenceError {
    pub reference: String,
    pub problem: String,
}

impl PluginRef {
    /// Parses a reference. Text without `@` is [`PluginRef::Bare`]; with one, the part before
    /// the first `@` must be a package name and the part after a digest or a semver requirement.
    pub fn parse(text: &str) -> Result<PluginRef, ReferenceError> {
        let fail = |problem: String| ReferenceError { reference: text.to_owned(), problem };
        let Some((name, rest)) = text.split_once('@') else { return Ok(PluginRef::Bare(text.to_owned())) };
        check_name(name).map_err(fail)?;
        if rest.is_empty() {
            return Err(fail("nothing follows `@`; write a version, a requirement or a digest".to_owned()));
        }
        if rest.starts_with(DIGEST_PREFIX) {
            if !is_digest(rest) {
                return Err(fail(format!("`{rest}` is not a digest: {}", digest_problem(rest))));
            }
            return Ok(PluginRef::Digest { name: name.to_owned(), digest: rest.to_owned() });
        }
        if rest.contains('@') {
            return Err(fail("it holds more than one `@`".to_owned()));
        }
        let requirement = match Version::parse(rest) {
            // A plain version pins exactly that version, not semver's default caret.
            Ok(version) => VersionReq {
                comparators: vec![semver::Comparator {
                    op: semver::Op::Exact,
                    major: version.major,
                    minor: Some(version.minor),
                    patch: Some(version.patch),
                    pre: version.pre,
                }],
            },
            Err(_) => {
                VersionReq::parse(rest).map_err(|e| fail(format!("`{rest}` is not a semver requirement: {e}")))?
            }
        };
        Ok(PluginRef::Version { name: name.to_owned(), requirement, text: rest.to_owned() })
    }

    /// The package name, or the bare text.
    pub fn name(&self) -> &str {
        match self {
            PluginRef::Bare(text) => text,
            PluginRef::Version { name, .. } | PluginRef::Digest { name, .. } => name,
        }
    }

    /// Whether this names a package (anything but [`PluginRef::Bare`]).
    pub fn is_package(&self) -> bool {
        !matches!(self, PluginRef::Bare(_))
    }
}

impl fmt::Display for PluginRef {
    /// The reference as it parses back: `name@text`, `name@sha256:…`, or the bare text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginRef::Bare(text) => f.write_str(text),
            PluginRef::Version { name, text, .. } => write!(f, "{name}@{text}"),
            PluginRef::Digest { name, digest } => write!(f, "{name}@{digest}"),
        }
    }
}

impl std::str::FromStr for PluginRef {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<PluginRef, ReferenceError> {
        PluginRef::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_are_not_package_references() {
        assert_eq!(PluginRef::parse("upper").unwrap(), PluginRef::Bare("upper".to_owned()));
        assert_eq!(PluginRef::parse("plugins/Upper.wasm").unwrap(), PluginRef::Bare("plugins/Upper.wasm".to_owned()));
        assert!(!PluginRef::parse("upper").unwrap().is_package());
    }

    #[test]
    fn plain_version_is_exact_and_keeps_its_text() {
        let r = PluginRef::parse("upper@1.2.0").unwrap();
        let PluginRef::Version { name, requirement, text } = &r else { panic!("{r:?}") };
        assert_eq!((name.as_str(), text.as_str()), ("upper", "1.2.0"));
        assert!(requirement.matches(&Version::new(1, 2, 0)));
        assert!(!requirement.matches(&Version::new(1, 2, 1)), "a plain version is not a caret requirement");
        assert_eq!(r.to_string(), "upper@1.2.0");
    }

    #[test]
    fn requirements_parse() {
        let r = PluginRef::parse("upper@^1.2").unwrap();
        let PluginRef::Version { requirement, text, .. } = &r else { panic!("{r:?}") };
        assert_eq!(text, "^1.2");
        assert!(requirement.matches(&Version::new(1, 9, 0)));
        assert!(!requirement.matches(&Version::new(2, 0, 0)));
        assert!(PluginRef::parse("upper@>=1, <3").is_ok());
        let pre = PluginRef::parse("upper@1.0.0-rc.1").unwrap();
        let PluginRef::Version { requirement, .. } = &pre else { panic!("{pre:?}") };
        assert!(requirement.matches(&Version::parse("1.0.0-rc.1").unwrap()));
    }

    #[test]
    fn digests_pin() {
        let digest = crate::content_digest(b"manifest");
        let r = PluginRef::parse(&format!("upper@{digest}")).unwrap();
        assert_eq!(r, PluginRef::Digest { name: "upper".to_owned(), digest: digest.clone() });
        assert_eq!(r.to_string(), format!("upper@{digest}"));
        assert_eq!(r.name(), "upper");
    }

    #[test]
    fn malformed_references_are_refused_saying_why() {
        let problem = |text: &str| PluginRef::parse(text).unwrap_err().to_string();
        assert!(problem("upper@").contains("nothing follows"));
        assert!(problem("Upper@1.0.0").contains("lowercase letter"));
        assert!(problem("@1.0.0").contains("cannot be empty"));
        assert!(problem("upper@sha256:abc").contains("64 hex digits"));
        assert!(problem("upper@banana").contains("not a semver requirement"));
        assert!(problem("upper@1.0@2").contains("more than one"));
        assert!(problem("upper@banana").starts_with("`upper@banana` is not a package reference"));
    }
}
