//! Running the same SQL on an Apache Ballista cluster (docs/CLUSTER.md).
//!
//! Ballista's scheduler plans a query into stages, its executors run them and
//! exchange shuffle files; nothing here distributes work itself. What this
//! module adds is what makes *our* queries run there:
//!
//! * [`node`]: how every node (scheduler and executors) builds its
//!   DataFusion state: our functions (`session_start`, `id_hash`), an object
//!   store registry that builds S3 stores from the settings the client sent
//!   with the query, and the check that client and node are the same
//!   version of supportfunnel;
//! * [`scheduler`] and [`executor`]: the `supportfunnel scheduler` and
//!   `supportfunnel executor` commands, Ballista's own processes with that
//!   state;
//! * [`codec`]: how plans with our operators travel to the scheduler and
//!   the executors;
//! * [`client`]: a [`SessionContext`](datafusion::prelude::SessionContext)
//!   whose queries are planned and run by the cluster (`--cluster`), and
//!   errors said in one line;
//! * [`jobs`]: what the client sends (tables Ballista cannot ship are read
//!   in the client), and each job watched: cancelled when its client stops
//!   reading, failed at once when the scheduler forgot it.
//!
//! [`ClusterUrl`] is here without the `cluster` feature too, so that a
//! config naming a cluster parses (and is refused with a clear line) in a
//! build without Ballista.

use std::fmt;

use crate::error::{Error, Result};

#[cfg(feature = "cluster")]
pub mod client;
#[cfg(feature = "cluster")]
pub mod codec;
#[cfg(feature = "cluster")]
pub mod executor;
#[cfg(feature = "cluster")]
pub mod jobs;
#[cfg(feature = "cluster")]
pub mod node;
#[cfg(feature = "cluster")]
pub mod scheduler;

/// Ballista's default scheduler port, taken when a URL gives none.
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;

/// Where a cluster's scheduler listens: `df://HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    /// Host name or IP address of the scheduler.
    pub host: String,
    /// Its gRPC port.
    pub port: u16,
}

impl ClusterUrl {
    /// Parses `df://HOST[:PORT]`. Anything else (another scheme, a path,
    /// credentials, a missing host) is refused, saying what was expected.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |problem: &str| {
            Error::location(
                text,
                format!(
                    "{problem}: a cluster is given as df://HOST:PORT (the scheduler's address)"
                ),
            )
        };
        let url = url::Url::parse(text.trim()).map_err(|e| bad(&format!("not a URL ({e})")))?;
        if url.scheme() != "df" {
            return Err(bad(&format!("scheme `{}` is not df", url.scheme())));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials do not belong in a cluster URL"));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a cluster URL has no path, query or fragment"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            _ => return Err(bad("no host")),
        };
        let port = url.port().unwrap_or(DEFAULT_SCHEDULER_PORT);
        if port == 0 {
            return Err(bad("port 0"));
        }
        Ok(Self { host, port })
    }

    /// The scheduler's gRPC endpoint, as Ballista's client takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// `host:port`, for connecting a socket.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl fmt::Display for ClusterUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "df://{}:{}", self.host, self.port)
    }
}

/// The version of supportfunnel a node or client is: the package version.
/// Client and scheduler must agree, because the plan a client sends names
/// our functions and SQL semantics of this version.
///
/// `SUPPORTFUNNEL_NODE_VERSION` replaces it, so that an upgrade (a node of
/// another version) can be rehearsed, and tested, with one build.
pub fn node_version() -> String {
    std::env::var("SUPPORTFUNNEL_NODE_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls() {
        let u = ClusterUrl::parse("df://sched.internal:50050").unwrap();
        assert_eq!(u.host, "sched.internal");
        assert_eq!(u.port, 50050);
        assert_eq!(u.endpoint(), "http://sched.internal:50050");
        assert_eq!(u.to_string(), "df://sched.internal:50050");
        assert_eq!(ClusterUrl::parse("df://10.0.0.5").unwrap().port, 50050);
        assert_eq!(
            ClusterUrl::parse("df://[::1]:7000").unwrap().authority(),
            "[::1]:7000"
        );
        for bad in [
            "sched:50050",
            "http://sched:50050",
            "df://",
            "df://user:pw@sched:1",
            "df://sched:1/path",
            "df://sched:0",
            "df://sched:99999",
            "",
        ] {
            let e = ClusterUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains("df://HOST:PORT"), "{bad}: {e}");
        }
    }
}
