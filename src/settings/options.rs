//! What a context is built from ([`EngineOptions`]): the tables to
//! register, memory, partitions, object-store settings, and the cluster to
//! run on, if any. The settings layer resolves them ([`super::Settings`]);
//! `crate::engine` builds the context from them.

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::rules::{EVENTS_TABLE, MESSAGES_TABLE};
use crate::settings::config::{S3Config, TableFormat};
use crate::settings::location::Location;

/// A table to register: its name in SQL, where its files are, and the Hive
/// partition columns its files must have (when a config names them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSource {
    /// Table name in SQL. `events` and `messages` are the contract tables
    /// (checked against spec §1, with the derived views); any other name is
    /// a plain Parquet table for ad-hoc SQL.
    pub name: String,
    /// Where its Parquet files are.
    pub location: Location,
    /// Partition columns the directory layout must have; unchecked when `None`.
    pub partition_cols: Option<Vec<String>>,
    /// Parquet files or a Delta Lake table.
    pub format: TableFormat,
}

impl TableSource {
    /// A table at `location` with no partition check.
    pub fn new(name: impl Into<String>, location: Location) -> Self {
        Self {
            name: name.into(),
            location,
            partition_cols: None,
            format: TableFormat::Parquet,
        }
    }
}

/// Everything needed to build a context.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// The tables to register, contract tables first.
    pub tables: Vec<TableSource>,
    /// Memory the query may use before operators spill to disk (bytes);
    /// `None` means unbounded.
    pub memory_limit: Option<usize>,
    /// Where spill files go; the system temp directory when `None`.
    pub temp_dir: Option<PathBuf>,
    /// DataFusion `target_partitions`; the number of cores when `None`.
    pub target_partitions: Option<usize>,
    /// Rows per batch; DataFusion's default (8192) when `None`.
    pub batch_size: Option<usize>,
    /// S3 settings over the `AWS_*` environment.
    pub s3: S3Config,
    /// DataFusion options (`datafusion.*` key, value), applied in order.
    pub datafusion_options: Vec<(String, String)>,
    /// Register the SQL reference views of `queries/views/` for the derived
    /// relations (`sessions`, `conversations`, `session_conversations`,
    /// `event_counts`) instead of the operators that compute them
    /// ([`crate::tables::native`]). The differential tests compare the two; a
    /// cluster runs the operators on its executors, as one process does.
    pub sql_views: bool,
    /// Leave out the `SELECT * FROM 'file.parquet'` shortcut (DataFusion's
    /// URL tables): `serve` offers its clients the registered tables only,
    /// never any file the server's account can read.
    pub no_url_tables: bool,
    /// Run queries on this Ballista cluster instead of in this process
    /// (docs/CLUSTER.md).
    pub cluster: Option<ClusterUrl>,
    /// Where the report keeps its intermediate tables on a cluster: an S3
    /// location (or a path mounted on every node) that every executor can
    /// read and write.
    pub scratch: Option<Location>,
}

/// Most plan partitions accepted (`--target-partitions`).
pub const MAX_TARGET_PARTITIONS: usize = 256;

/// Plan parallelism when a table is on an object store and
/// `target_partitions` is not set (see
/// [`crate::engine::context::context_without_tables`]).
pub const REMOTE_MIN_PARTITIONS: usize = 8;

impl EngineOptions {
    /// Options reading the `events` and `messages` datasets at the given
    /// paths or URLs, everything else default.
    pub fn new(events: impl AsRef<str>, messages: impl AsRef<str>) -> Result<Self> {
        Ok(Self {
            tables: vec![
                TableSource::new(EVENTS_TABLE, Location::parse(events.as_ref())?),
                TableSource::new(MESSAGES_TABLE, Location::parse(messages.as_ref())?),
            ],
            ..Self::default()
        })
    }

    /// The table named `name`, if any.
    pub fn table(&self, name: &str) -> Option<&TableSource> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// Whether any table is read from an object store (not a local path).
    pub fn reads_object_store(&self) -> bool {
        self.tables.iter().any(|t| t.location.is_remote())
    }
}

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

/// Parses a human byte size such as `2GiB`, `512MB` or `1073741824`.
pub fn parse_bytes(s: &str) -> Result<usize> {
    let size: bytesize::ByteSize = s.trim().parse().map_err(|e| {
        Error::usage(format!(
            "`{s}` is not a size (try 2GiB, 512MB or a byte count): {e}"
        ))
    })?;
    usize::try_from(size.as_u64()).map_err(|_| Error::usage(format!("`{s}` is too large")))
}
