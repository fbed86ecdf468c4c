//! The library's one error type, one variant per source: the query engine,
//! file formats, object stores and S3, local files, locations, the data
//! contract, the config file, arguments, the read-only rule, memory, a
//! cluster, interrupts.
//!
//! Every variant says *what* went wrong and *where* (table, column, file,
//! URL or config key) in one line, because a data engineer reading a
//! scheduler log has nothing else to go on. Secrets never go into messages:
//! object-store errors are passed through as object_store renders them,
//! which omits credentials.

use std::path::PathBuf;

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in supportfunnel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Query planning or execution failed inside DataFusion.
    #[error(transparent)]
    Query(#[from] datafusion::error::DataFusionError),

    /// Arrow kernel or IPC/CSV/JSON writer failure.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    /// Reading or writing a Parquet file failed.
    #[error(transparent)]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),

    /// An object store (S3, local) refused or failed a request.
    #[error(transparent)]
    ObjectStore(#[from] object_store::Error),

    /// S3 refused a request in a way worth explaining (credentials, a
    /// missing bucket), with S3's error code when its response had one.
    #[error("{location}: {problem}")]
    S3 {
        /// The URL involved.
        location: String,
        /// S3's `<Code>` (`AccessDenied`, `NoSuchBucket`, …), if known.
        code: Option<String>,
        /// What it means and what to check.
        problem: String,
    },

    /// A path or URL that cannot be used as given (malformed, unsupported
    /// scheme, a bucket where an object is needed).
    #[error("{location}: {problem}")]
    Location {
        /// The path or URL as given.
        location: String,
        /// What is wrong with it.
        problem: String,
    },

    /// A local file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// A table location that does not exist.
    #[error("table `{table}`: {location} does not exist")]
    MissingLocation {
        /// Table name.
        table: String,
        /// The path or URL given.
        location: String,
    },

    /// A table location with no Parquet files in it.
    #[error("table `{table}`: no Parquet files found at {location}")]
    EmptyTable {
        /// Table name.
        table: String,
        /// The path or URL given.
        location: String,
    },

    /// A file that does not match the data contract (spec §1).
    #[error("table `{table}`: column `{column}` {problem} in {file}")]
    Schema {
        /// Table name.
        table: String,
        /// Contract column.
        column: String,
        /// e.g. "is missing" or "has type Utf8, expected a timestamp".
        problem: String,
        /// The offending file.
        file: String,
    },

    /// A file that is not readable Parquet.
    #[error("table `{table}`: cannot read Parquet file {file}: {message}")]
    BadFile {
        /// Table name.
        table: String,
        /// The offending file.
        file: String,
        /// The reader's complaint.
        message: String,
    },

    /// A config file that does not parse or does not make sense.
    #[error("{origin}: {problem}")]
    Config {
        /// The file (or other origin) the config came from.
        origin: String,
        /// What is wrong, naming the key.
        problem: String,
    },

    /// A bad argument or option value (a flag, or a setting once resolved).
    #[error("{0}")]
    Usage(String),

    /// A statement that would write into a table the report reads, or a
    /// result written where a registered table lives.
    #[error("{0}")]
    ReadOnly(String),

    /// The work needs more memory than `--memory-limit` allows; the message
    /// says what limit works.
    #[error("{0}")]
    MemoryLimit(String),

    /// A Ballista cluster could not be used: the scheduler is unreachable or
    /// of another version, an executor could not read a table, every
    /// executor was lost (see `docs/CLUSTER.md`).
    #[error("cluster {cluster}: {problem}")]
    Cluster {
        /// The scheduler, as `df://host:port`.
        cluster: String,
        /// What went wrong, and what to check.
        problem: String,
    },

    /// The work was stopped by an interrupt (SIGINT or SIGTERM).
    #[error("interrupted")]
    Interrupted,

    /// One of our own queries returned something it never should (a bug,
    /// not a data problem).
    #[error("internal error: {0}")]
    Internal(String),
}

/// An error and its causes on one line, as the CLI and the Python package
/// print them: what failed, then why. DataFusion errors repeat their
/// sources in their own text and span lines, so causes already said are
/// dropped and line breaks folded.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let text = c
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    parts.join(": ")
}

/// Whether the memory pool refused a reservation anywhere in `e`'s chain of
/// causes: DataFusion's `ResourcesExhausted` at the root of one of them, by
/// type (`DataFusionError::find_root`), never by its message's text.
pub fn memory_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(d) = e.downcast_ref::<datafusion::error::DataFusionError>() {
            if matches!(
                d.find_root(),
                datafusion::error::DataFusionError::ResourcesExhausted(_)
            ) {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

impl Error {
    /// Shorthand for [`Error::Usage`].
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    /// Shorthand for [`Error::Location`].
    pub fn location(location: impl ToString, problem: impl Into<String>) -> Self {
        Error::Location {
            location: location.to_string(),
            problem: problem.into(),
        }
    }

    /// Whether the memory pool refused a reservation somewhere in its
    /// causes (DataFusion's `ResourcesExhausted`, however wrapped).
    pub fn is_resources_exhausted(&self) -> bool {
        memory_refused(self)
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
