//! The config file (TOML): tables, storage, engine settings, report
//! defaults, DataFusion options and the scheduled job's reports, in the
//! spirit of roapi's table configs.
//!
//! ```toml
//! [[tables]]
//! name = "events"
//! uri = "s3://lake/support/events/"
//! partition_cols = ["date"]          # optional: checked against the files
//!
//! [[tables]]
//! name = "messages"
//! uri = "s3://lake/support/messages/"
//!
//! [storage.s3]                        # optional: else the AWS_* environment
//! region = "eu-west-1"
//! endpoint = "http://127.0.0.1:9000"
//! allow_http = true
//! max_retries = 10                    # optional: retries of a failed request
//! retry_timeout = "3m"                #   … for at most this long
//! timeout = "30s"                     #   one request, body included
//! connect_timeout = "5s"
//!
//! [engine]
//! memory_limit = "2GiB"
//! temp_dir = "/var/tmp/supportfunnel"
//!
//! [defaults]
//! tz = "Europe/Paris"
//! tags = ["outage"]
//!
//! [datafusion]
//! "datafusion.execution.batch_size" = 8192
//!
//! [output]
//! location = "s3://lake/support/funnel_report"
//! sessions_location = "s3://lake/support/funnel_sessions"
//!
//! [[reports]]
//! name = "daily"
//! period = "daily"            # daily | weekly | trailing_28d | "<N>d"
//! sessions = true
//! ```
//!
//! Every section is optional; unknown keys anywhere are an error naming the
//! key (serde's `deny_unknown_fields`), because a misspelt setting silently
//! ignored is worse than a failed job. Command-line flags override the file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::settings::location::Location;

/// The whole file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Tables to register: `events` and `messages` are the contract tables;
    /// any other name is registered as a plain Parquet table for ad-hoc SQL.
    #[serde(default)]
    pub tables: Vec<TableConfig>,
    /// Object store settings.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Memory, spill and parallelism.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Report defaults (time zone, proactive filters).
    #[serde(default)]
    pub defaults: Defaults,
    /// DataFusion session options, by their full `datafusion.*` key.
    #[serde(default)]
    pub datafusion: BTreeMap<String, toml::Value>,
    /// Where the scheduled job writes.
    pub output: Option<OutputConfig>,
    /// The reports the scheduled job computes.
    #[serde(default)]
    pub reports: Vec<JobReport>,
    /// `[state]`: what makes the job's runs incremental.
    pub state: Option<StateConfig>,
    /// `[serve]`: the PostgreSQL-wire endpoint (`supportfunnel serve`).
    #[serde(default)]
    pub serve: ServeConfig,
    /// Where the config came from (the file's path), for errors found after
    /// parsing; empty for the default config.
    #[serde(skip)]
    pub origin: String,
}

/// One table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Table name in SQL.
    pub name: String,
    /// Local path or `s3://bucket/prefix`.
    pub uri: String,
    /// Hive partition columns the files must have (checked, not invented).
    #[serde(default)]
    pub partition_cols: Option<Vec<String>>,
    /// `parquet` (files or a Hive-partitioned directory, the default) or
    /// `delta` (a Delta Lake table; not for `events` and `messages`).
    #[serde(default)]
    pub format: TableFormat,
}

/// How a table's files are organised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    /// Parquet files, a directory of them, or Hive partitions.
    #[default]
    Parquet,
    /// A Delta Lake table (`_delta_log/`), read through delta-rs.
    Delta,
}

/// Object store settings.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// S3 (and S3-compatible) settings; unset fields come from `AWS_*`.
    #[serde(default)]
    pub s3: S3Config,
}

/// S3 settings. Secrets are never printed: `Debug` redacts them.
#[derive(Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// AWS region.
    pub region: Option<String>,
    /// Endpoint URL of an S3-compatible server.
    pub endpoint: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// Allow plain HTTP (local S3-compatible servers).
    pub allow_http: Option<bool>,
    /// Virtual-hosted-style requests (`bucket.host`); path-style when false.
    pub virtual_hosted_style: Option<bool>,
    /// How many times a failed request (5xx, `SlowDown`, a timeout, a
    /// connection reset) is tried again [default: 10].
    pub max_retries: Option<usize>,
    /// Stop retrying a request this long after its first try, e.g. "2m"
    /// [default: 3m].
    pub retry_timeout: Option<String>,
    /// Time one request may take, body included, e.g. "30s" [default: 30s].
    pub timeout: Option<String>,
    /// Time to open a connection, e.g. "5s" [default: 5s].
    pub connect_timeout: Option<String>,
}

impl S3Config {
    /// The durations, parsed (`None` where unset); a bad one is an error
    /// naming its key.
    pub fn durations(&self) -> Result<S3Durations> {
        let parse = |key: &str, v: &Option<String>| -> Result<Option<std::time::Duration>> {
            v.as_deref()
                .map(|s| {
                    humantime::parse_duration(s).map_err(|e| {
                        Error::usage(format!(
                            "[storage.s3] {key} = \"{s}\": {e} (write a duration such as \"30s\" or \"2m\")"
                        ))
                    })
                })
                .transpose()
        };
        Ok(S3Durations {
            retry_timeout: parse("retry_timeout", &self.retry_timeout)?,
            timeout: parse("timeout", &self.timeout)?,
            connect_timeout: parse("connect_timeout", &self.connect_timeout)?,
        })
    }
}

/// The parsed durations of [`S3Config`].
#[derive(Debug, Clone, Copy, Default)]
pub struct S3Durations {
    /// See [`S3Config::retry_timeout`].
    pub retry_timeout: Option<std::time::Duration>,
    /// See [`S3Config::timeout`].
    pub timeout: Option<std::time::Duration>,
    /// See [`S3Config::connect_timeout`].
    pub connect_timeout: Option<std::time::Duration>,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Config")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &redact(&self.access_key_id))
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("session_token", &redact(&self.session_token))
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout", &self.retry_timeout)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// Memory, spill and parallelism.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// e.g. "2GiB".
    pub memory_limit: Option<String>,
    /// Spill directory.
    pub temp_dir: Option<PathBuf>,
    /// Plan parallelism.
    pub target_partitions: Option<usize>,
    /// Rows per batch.
    pub batch_size: Option<usize>,
    /// Run on this Ballista cluster, `df://HOST:PORT` (docs/CLUSTER.md).
    pub cluster: Option<String>,
    /// On a cluster, where the report keeps its intermediate tables: an
    /// `s3://` location (or a path mounted on every node) every executor
    /// can read and write.
    pub scratch: Option<String>,
}

/// Report defaults.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// IANA time zone the days are read in.
    pub tz: Option<String>,
    /// Proactive filter: tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Proactive filter: content types.
    #[serde(default)]
    pub content_types: Vec<String>,
    /// Proactive filter: senders.
    #[serde(default)]
    pub senders: Vec<String>,
}

/// Where the scheduled job writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Base location of the report table (`report=<name>/report_date=<D>/`).
    pub location: String,
    /// Base location of the sessions table, for reports with `sessions`.
    pub sessions_location: Option<String>,
    /// `parquet`: one object per report and date (the default); `delta`:
    /// Delta Lake tables (report partitioned by `report`, `report_date`;
    /// sessions by `report`, `start_date`).
    #[serde(default)]
    pub format: TableFormat,
    /// Base location of the HTML pages of reports with `formats = ["html"]`
    /// (`report=<name>/report_date=<D>/report.html` under it); by default
    /// `<location>/_html`, a directory that table readers (Spark, Hive, Delta,
    /// DataFusion, DuckDB's `*.parquet` globs) pass over.
    pub html_location: Option<String>,
}

/// `supportfunnel serve` (src/serve/); flags win over these.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// `HOST:PORT` to listen on.
    pub listen: Option<String>,
    /// The user clients log in as.
    pub user: Option<String>,
    /// The user's password (`$SUPPORTFUNNEL_PG_PASSWORD` wins). Keep the
    /// file readable by the server's account only.
    pub password: Option<String>,
    /// PEM certificate chain for TLS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with `tls_cert`).
    pub tls_key: Option<PathBuf>,
    /// Connections served at once.
    pub max_connections: Option<usize>,
    /// Default time limit of a query, e.g. "5m" (clients may SET their own).
    pub statement_timeout: Option<String>,
    /// Time a new connection has to log in, e.g. "10s".
    pub login_timeout: Option<String>,
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("listen", &self.listen)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("max_connections", &self.max_connections)
            .field("statement_timeout", &self.statement_timeout)
            .field("login_timeout", &self.login_timeout)
            .finish()
    }
}

/// Where the job keeps what its next run needs (src/job/incremental/).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// A local directory or an `s3://bucket/prefix` of the job's own.
    pub location: String,
}

/// One report of the scheduled job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobReport {
    /// Name, used in the output path (`report=<name>`).
    pub name: String,
    /// `daily`, `weekly`, `trailing_28d` or `<N>d`: the period is the N
    /// local days before the run date.
    pub period: String,
    /// Also write the sessions of the period.
    #[serde(default)]
    pub sessions: bool,
    /// Renderings written beside the table result: `"html"` (one
    /// self-contained page, see [`crate::render::html`]). The table result in
    /// `[output] format` is always written; naming it here is allowed.
    #[serde(default)]
    pub formats: Vec<String>,
}

impl JobReport {
    /// Whether the report is also written as an HTML page; an unknown
    /// rendering is an error naming the report.
    pub fn wants_html(&self) -> Result<bool> {
        let mut html = false;
        for f in &self.formats {
            match f.to_ascii_lowercase().as_str() {
                "html" => html = true,
                "parquet" | "delta" => {}
                other => {
                    return Err(Error::usage(format!(
                        "report `{}`: format `{other}` is not html (the table result, \
                         parquet or delta, is set by [output] format)",
                        self.name
                    )))
                }
            }
        }
        Ok(html)
    }

    /// Days in the period.
    pub fn days(&self) -> Result<u32> {
        let days = match self.period.as_str() {
            "daily" => Some(1),
            "weekly" => Some(7),
            "trailing_28d" => Some(28),
            other => other
                .strip_suffix('d')
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| (1..=3660).contains(n)),
        };
        days.ok_or_else(|| {
            Error::usage(format!(
                "report `{}`: period `{}` is not daily, weekly, trailing_28d or <N>d",
                self.name, self.period
            ))
        })
    }
}

impl Config {
    /// Parses a config from TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let mut config: Config = toml::from_str(text).map_err(|e| Error::Config {
            origin: origin.to_string(),
            problem: e.to_string().trim_end().to_string(),
        })?;
        config.origin = origin.to_string();
        config.check()?;
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// An error about this config, naming where it came from.
    pub fn error(&self, problem: impl Into<String>) -> Error {
        Error::Config {
            origin: if self.origin.is_empty() {
                "config".into()
            } else {
                self.origin.clone()
            },
            problem: problem.into(),
        }
    }

    /// The location of a configured table, parsed.
    pub fn location_of(&self, table: &TableConfig) -> Result<Location> {
        Location::parse(&table.uri).map_err(|e| self.error(format!("table `{}`: {e}", table.name)))
    }

    fn check(&self) -> Result<()> {
        self.storage
            .s3
            .durations()
            .map_err(|e| self.error(e.to_string()))?;
        let mut names = std::collections::HashSet::new();
        for t in &self.tables {
            if t.uri.trim().is_empty() {
                return Err(self.error(format!(
                    "table `{}` has an empty uri (give a path or s3:// URL)",
                    t.name
                )));
            }
            self.location_of(t)?;
            if !names.insert(t.name.as_str()) {
                return Err(self.error(format!("table `{}` is configured twice", t.name)));
            }
        }
        if let Some(output) = &self.output {
            Location::parse(&output.location)
                .map_err(|e| self.error(format!("[output] location: {e}")))?;
            if let Some(s) = &output.sessions_location {
                Location::parse(s)
                    .map_err(|e| self.error(format!("[output] sessions_location: {e}")))?;
            }
            if let Some(s) = &output.html_location {
                Location::parse(s)
                    .map_err(|e| self.error(format!("[output] html_location: {e}")))?;
            }
        }
        let mut reports = std::collections::HashSet::new();
        for r in &self.reports {
            r.days().map_err(|e| self.error(e.to_string()))?;
            r.wants_html().map_err(|e| self.error(e.to_string()))?;
            if r.name.is_empty()
                || !r
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(self.error(format!(
                    "report name `{}` must be letters, digits, `_` or `-`",
                    r.name
                )));
            }
            if !reports.insert(r.name.as_str()) {
                return Err(self.error(format!("report `{}` is configured twice", r.name)));
            }
        }
        for key in self.datafusion.keys() {
            if !key.starts_with("datafusion.") {
                return Err(self.error(format!(
                    "[datafusion] key `{key}` must be a full option name such as \
                     datafusion.execution.batch_size"
                )));
            }
        }
        Ok(())
    }

    /// The table named `name`, if configured.
    pub fn table(&self, name: &str) -> Option<&TableConfig> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// `[datafusion]` options as `(key, value)` strings.
    pub fn datafusion_options(&self) -> Vec<(String, String)> {
        self.datafusion
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    other => format!("{other:?}"),
                };
                (k.clone(), value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_job_parses_with_its_s3_retry_settings() {
        let text = include_str!("../../examples/job.toml");
        Config::parse(text, "examples/job.toml").unwrap();
        let on = ["max_retries", "retry_timeout", "timeout", "connect_timeout"]
            .iter()
            .fold(text.to_string(), |t, k| {
                t.replace(&format!("# {k} ="), &format!("{k} ="))
            });
        let c = Config::parse(&on, "examples/job.toml").unwrap();
        assert_eq!(c.storage.s3.max_retries, Some(10));
        let d = c.storage.s3.durations().unwrap();
        assert_eq!(d.retry_timeout, Some(std::time::Duration::from_secs(180)));
        assert_eq!(d.timeout, Some(std::time::Duration::from_secs(30)));
        assert_eq!(d.connect_timeout, Some(std::time::Duration::from_secs(5)));
        let e = Config::parse("[storage.s3]\ntimeout = \"soon\"\n", "job.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("job.toml: [storage.s3] timeout = \"soon\""),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::parse("[engine]\nmemory_limt = \"1GiB\"\n", "job.toml").unwrap_err();
        assert!(e.to_string().contains("memory_limt"), "{e}");
        let e = Config::parse(
            "[[reports]]\nname = \"d\"\nperiod = \"daily\"\nsesions = true\n",
            "j",
        )
        .unwrap_err();
        assert!(e.to_string().contains("sesions"), "{e}");
        let e = Config::parse("[datafusion]\n\"execution.batch_size\" = 1\n", "j").unwrap_err();
        assert!(e.to_string().contains("execution.batch_size"), "{e}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let c = Config::parse(
            "[storage.s3]\naccess_key_id = \"AKIDSECRET1\"\nsecret_access_key = \"SHHH2\"\n",
            "j",
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("AKIDSECRET1") && !shown.contains("SHHH2"),
            "{shown}"
        );
    }

    #[test]
    fn periods() {
        let r = |p: &str| JobReport {
            name: "x".into(),
            period: p.into(),
            sessions: false,
            formats: vec![],
        };
        assert_eq!(r("daily").days().unwrap(), 1);
        assert_eq!(r("weekly").days().unwrap(), 7);
        assert_eq!(r("trailing_28d").days().unwrap(), 28);
        assert_eq!(r("3d").days().unwrap(), 3);
        assert!(r("0d").days().is_err() && r("monthly").days().is_err());
    }
}
