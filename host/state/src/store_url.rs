//! `[checkpoint] store` URLs: parsed and checked without connecting, so a job
//! spec can be validated by a build that has no object-store client.

use std::fmt;
use std::path::PathBuf;

use object_store::path::Path as ObjectPath;

const EXPECTED_URL: &str = "expected s3://<bucket>/<prefix> or file:///<absolute path>";

/// Where the durable copy of checkpoints lives: `[checkpoint] store`, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    pub(crate) text: String,
    pub(crate) target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    S3 { bucket: String, prefix: ObjectPath },
    File { root: PathBuf },
}

/// A `[checkpoint] store` URL that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", problem.describe(url))]
pub struct StoreUrlError {
    pub url: String,
    pub problem: UrlProblem,
}

/// What is wrong with a store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlProblem {
    NotAUrl(String),
    QueryOrFragment,
    Credentials,
    Port,
    Bucket,
    Prefix(String),
    RemoteHost,
    NotAbsolute,
    Scheme(String),
}

impl UrlProblem {
    fn describe(&self, text: &str) -> String {
        match self {
            Self::NotAUrl(e) => format!("`{text}` is not a URL ({e}); {EXPECTED_URL}"),
            Self::QueryOrFragment => format!("`{text}` must not have a query or a fragment; {EXPECTED_URL}"),
            Self::Credentials => {
                format!("`{text}` must not hold credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
            }
            Self::Port => format!("`{text}` must not name a port: set AWS_ENDPOINT_URL for another endpoint"),
            Self::Bucket => format!("`{text}` names no valid bucket; {EXPECTED_URL}"),
            Self::Prefix(e) => format!("`{text}` has an invalid prefix: {e}"),
            Self::RemoteHost => format!("`{text}` names a remote host; {EXPECTED_URL}"),
            Self::NotAbsolute => format!("`{text}` is not an absolute local path"),
            Self::Scheme(other) => format!("unsupported scheme `{other}:` in `{text}`; {EXPECTED_URL}"),
        }
    }
}

impl StoreUrl {
    /// Parses `s3://<bucket>[/<prefix>]` or `file:///<absolute path>`; the error says what is
    /// wrong with `text`.
    pub fn parse(text: &str) -> Result<Self, StoreUrlError> {
        let bad = |problem: UrlProblem| StoreUrlError { url: text.to_owned(), problem };
        let url = url::Url::parse(text).map_err(|e| bad(UrlProblem::NotAUrl(e.to_string())))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad(UrlProblem::QueryOrFragment));
        }
        let target = match url.scheme() {
            "s3" => {
                if !url.username().is_empty() || url.password().is_some() {
                    return Err(bad(UrlProblem::Credentials));
                }
                if url.port().is_some() {
                    return Err(bad(UrlProblem::Port));
                }
                let bucket = url.host_str().unwrap_or_default();
                let valid = !bucket.is_empty()
                    && bucket.len() <= 255
                    && bucket.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
                if !valid {
                    return Err(bad(UrlProblem::Bucket));
                }
                let prefix =
                    ObjectPath::from_url_path(url.path()).map_err(|e| bad(UrlProblem::Prefix(e.to_string())))?;
                Target::S3 { bucket: bucket.to_owned(), prefix }
            }
            "file" => {
                if url.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                    return Err(bad(UrlProblem::RemoteHost));
                }
                let root = url.to_file_path().map_err(|()| bad(UrlProblem::NotAbsolute))?;
                Target::File { root }
            }
            other => return Err(bad(UrlProblem::Scheme(other.to_owned()))),
        };
        Ok(Self { text: text.to_owned(), target })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        let s3 = StoreUrl::parse("s3://bucket/a/b").unwrap();
        assert_eq!(s3.target, Target::S3 { bucket: "bucket".to_owned(), prefix: ObjectPath::from("a/b") });
        assert_eq!(s3.to_string(), "s3://bucket/a/b");
        let bare = StoreUrl::parse("s3://bucket").unwrap();
        assert_eq!(bare.target, Target::S3 { bucket: "bucket".to_owned(), prefix: ObjectPath::default() });
        let file = StoreUrl::parse("file:///mnt/ck").unwrap();
        assert_eq!(file.target, Target::File { root: PathBuf::from("/mnt/ck") });
        for (bad, says) in [
            ("gs://bucket/x", "unsupported scheme `gs:`"),
            ("bucket/x", "not a URL"),
            ("s3://", "no valid bucket"),
            ("s3://key:secret@bucket/x", "credentials"),
            ("s3://bucket:9000/x", "AWS_ENDPOINT_URL"),
            ("s3://bucket/a//b", "invalid prefix"),
            ("s3://bucket/x?versioning=1", "query"),
            ("file://host/x", "remote host"),
        ] {
            let err = StoreUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
