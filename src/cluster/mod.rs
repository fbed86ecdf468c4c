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
//! [`ClusterUrl`] (defined with the other settings) parses without the
//! `cluster` feature too, so that a config naming a cluster is refused with
//! a clear line in a build without Ballista.

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

pub use crate::settings::options::{ClusterUrl, DEFAULT_SCHEDULER_PORT};

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
