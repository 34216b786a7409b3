//! Change URIs: which commit a change is, and where to fetch it from.
//!
//! ```text
//! git://<host>[:<port>]/<repository path>/<percent-encoded fully-qualified ref>/<40-hex sha>
//! file:///<absolute repository path>/<percent-encoded fully-qualified ref>/<40-hex sha>
//! ```
//!
//! - The sha (lowercase hex) is the change; the ref (`refs/heads/feature`, encoded as
//!   `refs%2Fheads%2Ffeature` so that it is one path segment) is where to find the commit when
//!   fetching the sha alone fails.
//! - `git://` changes are fetched from `git://<host>[:<port>]/<repository path>`, `file://`
//!   changes from the local repository at the path.
//! - The provider is the scheme and host: all URIs of one request must share it.
//! - No user info, query or fragment.

use std::fmt;

/// A parsed change URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeUri {
    provider: String,
    repository: String,
    reference: String,
    sha: String,
}

/// Why a change URI does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriError(String);

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UriError {}

fn bad(what: impl Into<String>) -> UriError {
    UriError(what.into())
}

impl ChangeUri {
    /// Parse `uri`; the error says what is wrong with it.
    pub fn parse(uri: &str) -> Result<ChangeUri, UriError> {
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| bad("not a URI (expected git://… or file:///…)"))?;
        if rest.contains(['?', '#']) {
            return Err(bad("a change URI has no query or fragment"));
        }
        let (host, path) = match scheme {
            "git" => {
                let (host, path) = rest
                    .split_once('/')
                    .ok_or_else(|| bad("no repository path after the host"))?;
                if host.is_empty() {
                    return Err(bad("no host"));
                }
                if host.contains('@') {
                    return Err(bad("a change URI has no user info"));
                }
                check_host(host)?;
                (host, path)
            }
            "file" => {
                let path = rest.strip_prefix('/').ok_or_else(|| {
                    bad("a file URI names an absolute path with no host: file:///path/…")
                })?;
                ("", path)
            }
            other => {
                return Err(bad(format!(
                    "unsupported scheme `{other}://` (expected git:// or file://)"
                )))
            }
        };
        let mut segments: Vec<&str> = path.split('/').collect();
        let sha = segments.pop().unwrap_or_default();
        let encoded_ref = segments
            .pop()
            .ok_or_else(|| bad("expected <repository>/<ref>/<sha>"))?;
        if !is_sha(sha) {
            return Err(bad(format!(
                "`{}` is not a 40-hex lowercase commit sha",
                excerpt(sha)
            )));
        }
        let reference = percent_decode(encoded_ref)?;
        check_ref(&reference)?;
        if segments.is_empty() || segments.iter().any(|s| s.is_empty() || *s == "..") {
            return Err(bad("expected a repository path before the ref"));
        }
        let repo_path = segments.join("/");
        let repository = match scheme {
            "git" => format!("git://{host}/{repo_path}"),
            _ => format!("/{repo_path}"),
        };
        Ok(ChangeUri {
            provider: format!("{scheme}://{host}"),
            repository,
            reference,
            sha: sha.to_owned(),
        })
    }

    /// `git://<host[:port]>` or `file://`: URIs of one request share it.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Where to fetch the change from: a `git://` URL or a local path.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The fully-qualified ref the change is on.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The ref without `refs/heads/` (or `refs/`): a label for commit messages.
    pub fn label(&self) -> &str {
        self.reference
            .strip_prefix("refs/heads/")
            .or_else(|| self.reference.strip_prefix("refs/"))
            .unwrap_or(&self.reference)
    }

    /// The commit.
    pub fn sha(&self) -> &str {
        &self.sha
    }

    /// A `file://` URI for the commit `sha` on `reference` of the repository at `path`.
    pub fn file(path: &std::path::Path, reference: &str, sha: &str) -> String {
        let path = path.display().to_string();
        format!(
            "file://{}/{}/{sha}",
            path.trim_end_matches('/'),
            percent_encode(reference)
        )
    }
}

fn is_sha(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn excerpt(s: &str) -> String {
    if s.chars().count() > 48 {
        format!("{}…", s.chars().take(48).collect::<String>())
    } else {
        s.to_owned()
    }
}

fn check_host(host: &str) -> Result<(), UriError> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err(bad(format!("`{}` is not a host name", excerpt(host))));
    }
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return Err(bad(format!("`{}` is not a port", excerpt(port))));
        }
    }
    Ok(())
}

/// The rules of `git check-ref-format` that matter here, plus: fully qualified (`refs/…`).
pub(super) fn check_ref(r: &str) -> Result<(), UriError> {
    let wrong = |why: &str| Err(bad(format!("ref `{}` {why}", excerpt(r))));
    if !r.starts_with("refs/") {
        return wrong("is not fully qualified (expected refs/…)");
    }
    if r.ends_with('/') || r.ends_with(".lock") || r.ends_with('.') {
        return wrong("has a bad ending");
    }
    if r.contains("..") || r.contains("//") || r.contains("@{") || r.contains("/.") {
        return wrong("is not a valid ref name");
    }
    if r.chars().any(|c| c.is_control() || " ~^:?*[\\".contains(c)) {
        return wrong("contains a character refs cannot have");
    }
    Ok(())
}

fn percent_decode(s: &str) -> Result<String, UriError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad(format!("bad percent-encoding in `{}`", excerpt(s))))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad(format!("`{}` does not decode to UTF-8", excerpt(s))))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn git_and_file_uris_parse() {
        let u = ChangeUri::parse(&format!(
            "git://git.example.com:9418/org/pay/refs%2Fheads%2Ffeature%2F1/{SHA}"
        ))
        .unwrap();
        assert_eq!(u.provider(), "git://git.example.com:9418");
        assert_eq!(u.repository(), "git://git.example.com:9418/org/pay");
        assert_eq!(u.reference(), "refs/heads/feature/1");
        assert_eq!(u.label(), "feature/1");
        assert_eq!(u.sha(), SHA);
        let f =
            ChangeUri::parse(&format!("file:///srv/git/pay.git/refs%2Fheads%2Fx/{SHA}")).unwrap();
        assert_eq!(f.provider(), "file://");
        assert_eq!(f.repository(), "/srv/git/pay.git");
        assert_eq!(
            ChangeUri::file(
                std::path::Path::new("/srv/git/pay.git"),
                "refs/heads/x",
                SHA
            ),
            format!("file:///srv/git/pay.git/refs%2Fheads%2Fx/{SHA}")
        );
    }

    #[test]
    fn malformed_uris_say_what_is_wrong() {
        for (uri, says) in [
            (
                "https://h/r/refs%2Fheads%2Fx/SHA",
                "unsupported scheme `https://`",
            ),
            ("nothing", "not a URI"),
            (
                "git://h/r/refs%2Fheads%2Fx/0123",
                "is not a 40-hex lowercase commit sha",
            ),
            (
                "git://h/r/refs%2Fheads%2Fx/0123456789ABCDEF0123456789abcdef01234567",
                "not a 40-hex lowercase",
            ),
            ("git://h/r/main/SHA", "is not fully qualified"),
            (
                "git://h/r/refs%2Fheads%2Fa..b/SHA",
                "is not a valid ref name",
            ),
            ("git://h/r/refs%2Fheads%2Fx%ZZ/SHA", "bad percent-encoding"),
            ("git://h/refs%2Fheads%2Fx/SHA", "expected a repository path"),
            ("git://u@h/r/refs%2Fheads%2Fx/SHA", "no user info"),
            ("git://h:http/r/refs%2Fheads%2Fx/SHA", "is not a port"),
            (
                "git://h/r/refs%2Fheads%2Fx/SHA?keyway=1",
                "no query or fragment",
            ),
            (
                "file://host/r/refs%2Fheads%2Fx/SHA",
                "absolute path with no host",
            ),
            ("git:///r/refs%2Fheads%2Fx/SHA", "no host"),
        ] {
            let uri = uri.replace("SHA", SHA);
            let e = ChangeUri::parse(&uri).unwrap_err().to_string();
            assert!(e.contains(says), "{uri}: {e}");
        }
    }
}
