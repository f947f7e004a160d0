//! `url_host` / `url_path`: a byte-level scan of http(s) URLs, without a full URL parser.
//!
//! A URL here is `http://` or `https://` (scheme in any case), then an authority
//! that ends at the first `/`, `?` or `#`. The host is the authority less any
//! `userinfo@` prefix and `:port` suffix (a bracketed IPv6 host keeps its
//! brackets). Anything else, or an empty host, is not a URL and yields null.
//! Hosts are returned as written (no lower-casing or percent-decoding).

use std::sync::Arc;

use arrow_array::{Array, ArrayRef};

use super::{map_strings, with_strings};
use crate::error::ExprError;

/// `url_host(s)`: the host of an http(s) URL, or null.
pub fn url_host(array: &dyn Array) -> Result<ArrayRef, ExprError> {
    with_strings!(array, "url_host", |s| Ok(Arc::new(map_strings(s, |v, out| push(url_host_of(v), out))?) as ArrayRef))
}

/// `url_path(s)`: the path of an http(s) URL (from its first `/` up to `?` or
/// `#`; `''` when it has none), or null when `s` is not a URL.
pub fn url_path(array: &dyn Array) -> Result<ArrayRef, ExprError> {
    with_strings!(array, "url_path", |s| Ok(Arc::new(map_strings(s, |v, out| push(url_path_of(v), out))?) as ArrayRef))
}

fn push(part: Option<&str>, out: &mut Vec<u8>) -> bool {
    match part {
        Some(p) => {
            out.extend_from_slice(p.as_bytes());
            true
        }
        None => false,
    }
}

/// Where the authority starts: just after `http://` or `https://`.
fn authority_start(b: &[u8]) -> Option<usize> {
    if b.len() >= 7 && b[..7].eq_ignore_ascii_case(b"http://") {
        Some(7)
    } else if b.len() >= 8 && b[..8].eq_ignore_ascii_case(b"https://") {
        Some(8)
    } else {
        None
    }
}

/// The authority's bounds and the host's bounds within `url`, as byte offsets.
fn split_authority(url: &str) -> Option<(usize, usize, usize, usize)> {
    let b = url.as_bytes();
    let start = authority_start(b)?;
    let end = b[start..].iter().position(|c| matches!(c, b'/' | b'?' | b'#')).map_or(b.len(), |i| start + i);
    let authority = &b[start..end];
    let host_start = start + authority.iter().rposition(|&c| c == b'@').map_or(0, |i| i + 1);
    let host = &b[host_start..end];
    let host_len = if host.first() == Some(&b'[') {
        host.iter().position(|&c| c == b']')? + 1
    } else {
        host.iter().position(|&c| c == b':').unwrap_or(host.len())
    };
    (host_len > 0).then_some((start, end, host_start, host_start + host_len))
}

/// The host of one URL; see the module docs.
pub fn url_host_of(url: &str) -> Option<&str> {
    let (_, _, host_start, host_end) = split_authority(url)?;
    url.get(host_start..host_end)
}

/// The path of one URL; see [`url_path`].
pub fn url_path_of(url: &str) -> Option<&str> {
    let (_, end, _, _) = split_authority(url)?;
    let rest = url.get(end..)?;
    if !rest.starts_with('/') {
        return Some("");
    }
    let path_end = rest.bytes().position(|c| c == b'?' || c == b'#').unwrap_or(rest.len());
    rest.get(..path_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let cases = [
            ("http://example.com/a/b", Some("example.com")),
            ("https://example.com", Some("example.com")),
            ("HTTPS://Example.COM?x=1", Some("Example.COM")),
            ("http://example.com:8080/x", Some("example.com")),
            ("http://user:pw@example.com:81/x", Some("example.com")),
            ("http://[::1]:8080/x", Some("[::1]")),
            ("http://host#frag", Some("host")),
            ("http://[::1/x", None),
            ("http:///path", None),
            ("http://:80/", None),
            ("ftp://example.com/", None),
            ("example.com/a", None),
            ("http:/example.com", None),
            ("", None),
            ("http://ünï.example/ü", Some("ünï.example")),
        ];
        for (url, want) in cases {
            assert_eq!(url_host_of(url), want, "{url}");
        }
    }

    #[test]
    fn paths() {
        let cases = [
            ("http://example.com/a/b?q=1#f", Some("/a/b")),
            ("https://example.com", Some("")),
            ("https://example.com?q=/x", Some("")),
            ("https://example.com#/x", Some("")),
            ("http://example.com:8080/", Some("/")),
            ("http://u@h/p/ü", Some("/p/ü")),
            ("http:///path", None),
            ("mailto:a@b", None),
        ];
        for (url, want) in cases {
            assert_eq!(url_path_of(url), want, "{url}");
        }
    }
}
