//! Where data lives: a local path or an object-store URL, told apart once.
//!
//! Every path or URL the user gives (a table's `uri`, `--events`, `--output`,
//! a `COPY … TO` target, the job's output) becomes a [`Location`] before
//! anything asks "is this remote?". `file://` URLs are local paths.

use std::fmt;
use std::path::{Path, PathBuf};

use url::Url;

use crate::error::{Error, Result};

/// A local path or an object-store URL (`s3://bucket/prefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A path on this machine (relative paths are relative to the working
    /// directory), as given.
    Local(PathBuf),
    /// An object-store URL, as given; its scheme is checked when a store is
    /// made for it ([`crate::io::storage::ensure_store`]).
    Remote(Url),
}

impl Location {
    /// Parses a path or URL. Anything with `scheme://` other than `file://`
    /// is a URL and must parse as one; everything else is a local path.
    pub fn parse(text: &str) -> Result<Self> {
        if text.trim().is_empty() {
            return Err(Error::usage(
                "an empty location was given (give a path or an s3:// URL)",
            ));
        }
        if let Some(path) = text.strip_prefix("file://") {
            return Ok(Location::Local(PathBuf::from(path)));
        }
        if !text.contains("://") {
            return Ok(Location::Local(PathBuf::from(text)));
        }
        Url::parse(text)
            .map(Location::Remote)
            .map_err(|e| Error::location(text, format!("not a valid URL ({e})")))
    }

    /// Whether this names an object store rather than a local path.
    pub fn is_remote(&self) -> bool {
        matches!(self, Location::Remote(_))
    }

    /// The local path, if this is one.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::Remote(_) => None,
        }
    }

    /// The URL, if this is remote.
    pub fn as_url(&self) -> Option<&Url> {
        match self {
            Location::Local(_) => None,
            Location::Remote(u) => Some(u),
        }
    }
}

impl fmt::Display for Location {
    /// As the user wrote it (a path, or the URL).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Remote(u) => write!(f, "{u}"),
        }
    }
}

impl std::str::FromStr for Location {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Location::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_urls_and_file_urls() {
        let l = |s: &str| Location::parse(s).unwrap();
        assert_eq!(
            l("data/sample/events"),
            Location::Local("data/sample/events".into())
        );
        assert_eq!(l("file:///tmp/x"), Location::Local("/tmp/x".into()));
        assert!(l("s3://lake/events/").is_remote());
        assert_eq!(l("s3://lake/events/").to_string(), "s3://lake/events/");
        let e = Location::parse("://lake").unwrap_err().to_string();
        assert!(
            e.contains("://lake") && e.contains("not a valid URL"),
            "{e}"
        );
        assert!(Location::parse("  ").is_err());
    }
}
