//! Image references: the `<repository>@sha256:<hex>` pins callers send, and
//! the parts of the references compose writes into a container's config.
//!
//! The grammar is the engine's (distribution's `reference` package): a
//! repository is an optional registry host (with a port) and `/`-separated
//! path components of lowercase letters and digits joined by `.`, `_`,
//! `__` or dashes; a tag is a word character then up to 127 of word
//! characters, `.` and `-`; a digest here is always `sha256:` and 64
//! lowercase hex digits. Nothing else reaches a command or a compose file.

use std::fmt;

/// The longest repository name the engine accepts.
const MAX_NAME: usize = 255;
const DIGEST_PREFIX: &str = "sha256:";

/// One image by content, as a caller pinned it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImagePin {
    repository: String,
    /// The 64 lowercase hex digits after `sha256:`.
    hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("an image pin is `<repository>@sha256:<64 lowercase hex digits>`, with a digest")]
    NoDigest,
    #[error("the digest must be `sha256:` followed by 64 lowercase hex digits")]
    Digest,
    #[error(
        "`{0}` is not a repository name: lowercase letters, digits and `._-` between `/`, after an optional registry host"
    )]
    Repository(String),
}

impl ImagePin {
    /// Parses `<repository>@sha256:<hex>`; a tag before the digest is
    /// refused, as it would say something the digest overrides.
    pub fn parse(text: &str) -> Result<Self, PinError> {
        let (repository, digest) = text.split_once('@').ok_or(PinError::NoDigest)?;
        let hex = digest.strip_prefix(DIGEST_PREFIX).ok_or(PinError::Digest)?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(PinError::Digest);
        }
        if !is_repository(repository) {
            return Err(PinError::Repository(repository.to_owned()));
        }
        Ok(Self {
            repository: repository.to_owned(),
            hex: hex.to_owned(),
        })
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// `sha256:<hex>`.
    pub fn digest(&self) -> String {
        format!("{DIGEST_PREFIX}{}", self.hex)
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for ImagePin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{DIGEST_PREFIX}{}", self.repository, self.hex)
    }
}

/// A reference as compose writes it (`repo`, `repo:tag`, `repo@digest`,
/// `repo:tag@digest`), split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference<'a> {
    pub repository: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

impl<'a> Reference<'a> {
    /// `None` when the text is not a valid reference.
    pub fn parse(text: &'a str) -> Option<Self> {
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (text, None),
        };
        // A tag follows the last `:` that comes after the last `/`; a `:`
        // before it belongs to the registry's port.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
            None => (name, None),
        };
        let digest_ok = digest.is_none_or(|d| {
            d.strip_prefix(DIGEST_PREFIX).is_some_and(|hex| {
                hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            })
        });
        (is_repository(repository) && tag.is_none_or(is_tag) && digest_ok).then_some(Self {
            repository,
            tag,
            digest,
        })
    }

    /// The pin this reference names, when it has a digest.
    pub fn pin(&self) -> Option<ImagePin> {
        let hex = self.digest?.strip_prefix(DIGEST_PREFIX)?;
        Some(ImagePin {
            repository: self.repository.to_owned(),
            hex: hex.to_owned(),
        })
    }
}

fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-')
}

/// The registry host (with its port) that `repository` names, and the path
/// after it. As the engine decides: a first component followed by more,
/// with a `.` or a `:`, or `localhost`, or an uppercase letter, is a host.
/// The one rule for every question about a reference's registry.
fn split_host(repository: &str) -> (Option<&str>, &str) {
    match repository.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, repository),
    }
}

/// Docker Hub's key in a client configuration's `auths`.
pub const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// The registry a repository lives in, as credentials are keyed: its host,
/// else Docker Hub.
pub fn registry_of(repository: &str) -> &str {
    split_host(repository).0.unwrap_or(DOCKER_HUB)
}

/// `[host[:port]/]component(/component)*`, at most 255 bytes.
fn is_repository(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME {
        return false;
    }
    let (host, path) = split_host(name);
    host.is_none_or(is_host_port) && path.split('/').all(is_path_component)
}

fn is_host_port(text: &str) -> bool {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    let label_ok = |label: &str| {
        let b = label.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
    };
    host.split('.').all(label_ok)
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Lowercase letters and digits, joined by one `.`, one or two `_`, or
/// any number of `-`.
fn is_path_component(text: &str) -> bool {
    let bytes = text.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &text[start..i];
        if !(separator == "."
            || separator == "_"
            || separator == "__"
            || separator.bytes().all(|b| b == b'-'))
        {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn pins_are_a_repository_and_a_sha256_digest() {
        let pin = ImagePin::parse(&format!("127.0.0.1:5000/team/app@sha256:{HEX}")).unwrap();
        assert_eq!(pin.repository(), "127.0.0.1:5000/team/app");
        assert_eq!(pin.digest(), format!("sha256:{HEX}"));
        assert_eq!(
            pin.to_string(),
            format!("127.0.0.1:5000/team/app@sha256:{HEX}")
        );
        for ok in [
            "app",
            "library/app",
            "registry.example.com/a/b-c",
            "localhost/x",
            "a__b",
            "a.b",
            "a---b",
        ] {
            assert!(
                ImagePin::parse(&format!("{ok}@sha256:{HEX}")).is_ok(),
                "{ok}"
            );
        }
    }

    #[test]
    fn anything_else_is_not_a_pin() {
        let upper = HEX.to_uppercase();
        let bad = [
            "app:1".to_string(),
            format!("app@sha512:{HEX}"),
            format!("app@sha256:{}", &HEX[1..]),
            format!("app@sha256:{upper}"),
            format!("app:1@sha256:{HEX}"),
            format!("App@sha256:{HEX}"),
            format!("-app@sha256:{HEX}"),
            format!("a..b@sha256:{HEX}"),
            format!("a/@sha256:{HEX}"),
            format!("@sha256:{HEX}"),
            format!("host:port/app@sha256:{HEX}"),
            format!("app name@sha256:{HEX}"),
            format!("app\n@sha256:{HEX}"),
            format!("{}@sha256:{HEX}", "a".repeat(256)),
            format!("app@sha256:{HEX}\n"),
        ];
        for text in bad {
            assert!(ImagePin::parse(&text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn the_registry_is_decided_once() {
        for (repository, registry) in [
            ("127.0.0.1:5000/team/web", "127.0.0.1:5000"),
            ("reg.example.com/web", "reg.example.com"),
            ("Registry.Example.com/app", "Registry.Example.com"),
            ("Registry/app", "Registry"),
            ("localhost/web", "localhost"),
            ("team/web", DOCKER_HUB),
            ("web", DOCKER_HUB),
        ] {
            assert_eq!(registry_of(repository), registry, "{repository}");
            let pin = ImagePin::parse(&format!("{repository}@sha256:{HEX}"))
                .unwrap_or_else(|e| panic!("{repository}: {e}"));
            assert_eq!(registry_of(pin.repository()), registry, "{repository}");
        }
        // A lowercase path component is never a host, an uppercase one is
        // only where a host may stand.
        assert!(ImagePin::parse(&format!("team/Web@sha256:{HEX}")).is_err());
    }

    #[test]
    fn references_split_at_the_tag_not_the_port() {
        let r = Reference::parse("127.0.0.1:5000/app:v2").unwrap();
        assert_eq!(
            (r.repository, r.tag, r.digest),
            ("127.0.0.1:5000/app", Some("v2"), None)
        );
        let r = Reference::parse("127.0.0.1:5000/app").unwrap();
        assert_eq!((r.repository, r.tag), ("127.0.0.1:5000/app", None));
        let r = Reference::parse("shop_web").unwrap();
        assert_eq!((r.repository, r.tag), ("shop_web", None));
        let text = format!("registry.example.com/app:1@sha256:{HEX}");
        let r = Reference::parse(&text).unwrap();
        assert_eq!(r.tag, Some("1"));
        assert_eq!(r.pin().unwrap().repository(), "registry.example.com/app");
        assert!(Reference::parse("app:").is_none());
        assert!(Reference::parse("APP").is_none());
    }
}
