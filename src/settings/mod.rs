//! What a command runs with, resolved once: flags over the config file over
//! the defaults, the same for every command.
//!
//! The binary turns its flags into [`Flags`], loads the [`Config`] (or takes
//! the empty one), reads the process's [`Env`], and calls
//! [`Settings::resolve`]; nothing else decides precedence. A library user
//! or a test does the same without a process.
//!
//! | setting | flag | config | default |
//! |---|---|---|---|
//! | events / messages | `--events`, `--messages` | `[[tables]]` `uri` | the bundled sample (`data/sample/`) |
//! | partition check | — | `[[tables]]` `partition_cols` (only when the flag did not move the table) | none |
//! | other tables | — | other `[[tables]]` | none |
//! | memory limit | `--memory-limit` | `[engine] memory_limit` | unbounded |
//! | spill directory | `--temp-dir` | `[engine] temp_dir` | the system temp directory |
//! | partitions | `--target-partitions` | `[engine] target_partitions` | the cores (8 at least over S3) |
//! | batch size | — | `[engine] batch_size` | DataFusion's |
//! | S3 | — | `[storage.s3]` | the `AWS_*` environment |
//! | cluster | `--cluster` | `[engine] cluster` | none: queries run in this process |
//! | cluster scratch | `--scratch` | `[engine] scratch` | none (a report on a cluster needs one) |
//! | time zone | `--tz` | `[defaults] tz` | UTC |
//! | proactive filters | `--tag`, `--content-type`, `--sender` | `[defaults]` lists | none |

pub mod config;
pub mod location;
pub mod options;
pub mod period;

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::error::{Error, Result};
use crate::rules::{EVENTS_TABLE, MESSAGES_TABLE};
use crate::settings::config::Config;
use crate::settings::config::TableFormat;
use crate::settings::location::Location;
use crate::settings::period::parse_tz;
use options::ClusterUrl;
use options::{parse_bytes, EngineOptions, TableSource};

/// What the command line gave. Every field is optional: unset means "ask
/// the config, then the default".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// `--events`: path or URL of the events dataset.
    pub events: Option<String>,
    /// `--messages`: path or URL of the messages dataset.
    pub messages: Option<String>,
    /// `--memory-limit`, e.g. `2GiB`.
    pub memory_limit: Option<String>,
    /// `--temp-dir`: spill directory.
    pub temp_dir: Option<PathBuf>,
    /// `--target-partitions`.
    pub target_partitions: Option<usize>,
    /// `--cluster`: `df://HOST:PORT` of a Ballista scheduler.
    pub cluster: Option<String>,
    /// `--scratch`: the report's intermediate tables on a cluster.
    pub scratch: Option<String>,
    /// `--tz`: IANA zone the report's days are read in.
    pub tz: Option<String>,
    /// `--tag` (repeatable): proactive filter.
    pub tags: Vec<String>,
    /// `--content-type` (repeatable): proactive filter.
    pub content_types: Vec<String>,
    /// `--sender` (repeatable): proactive filter.
    pub senders: Vec<String>,
}

/// What the process around the command contributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// The instant taken as now (the default period and run date).
    pub now: DateTime<Utc>,
    /// The bundled sample's directory (with `events/` and `messages/`), if
    /// one is found.
    pub sample: Option<PathBuf>,
}

impl Env {
    /// The clock, and the sample found from the working directory: a
    /// checkout's `data/sample`, else the one of the checkout `cargo run` or
    /// `cargo test` runs from (`CARGO_MANIFEST_DIR`, which cargo sets when it
    /// runs a program; nothing of the build machine is baked in).
    pub fn from_process() -> Self {
        let candidates = [Some(PathBuf::from("data/sample")), {
            std::env::var_os("CARGO_MANIFEST_DIR").map(|d| PathBuf::from(d).join("data/sample"))
        }];
        Self {
            now: Utc::now(),
            sample: candidates
                .into_iter()
                .flatten()
                .find(|d| d.join(EVENTS_TABLE).is_dir() && d.join(MESSAGES_TABLE).is_dir()),
        }
    }
}

/// The report's proactive filters (spec §4): one kind's values are
/// alternatives, different kinds must all hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Deliveries with any of these tags.
    pub tags: Vec<String>,
    /// Deliveries of any of these content types.
    pub content_types: Vec<String>,
    /// Deliveries from any of these senders.
    pub senders: Vec<String>,
}

/// Everything a command runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Tables, memory, spilling, parallelism, object stores.
    pub engine: EngineOptions,
    /// The zone the report's days (and the job's run date) are read in.
    pub tz: Tz,
    /// The report's proactive filters.
    pub filters: Filters,
    /// The instant taken as now.
    pub now: DateTime<Utc>,
}

impl Settings {
    /// Flags over `config` over the defaults (the table in the module
    /// documentation). Every value is checked here, and an error names the
    /// flag or the config key it came from.
    pub fn resolve(flags: &Flags, config: &Config, env: &Env) -> Result<Self> {
        let mut tables = Vec::new();
        for (name, flag) in [
            (EVENTS_TABLE, &flags.events),
            (MESSAGES_TABLE, &flags.messages),
        ] {
            let configured = config.table(name);
            let source = match (flag, configured) {
                (Some(text), _) => TableSource::new(
                    name,
                    Location::parse(text).map_err(|e| Error::usage(format!("--{name}: {e}")))?,
                ),
                (None, Some(t)) => {
                    if t.format != TableFormat::Parquet {
                        return Err(config.error(format!(
                            "[[tables]] `{name}`: the contract tables are read as Parquet; \
                             format = \"delta\" is for other tables"
                        )));
                    }
                    TableSource {
                        name: name.to_string(),
                        location: config.location_of(t)?,
                        partition_cols: t.partition_cols.clone(),
                        format: t.format,
                    }
                }
                (None, None) => {
                    let dir = env.sample.as_ref().ok_or_else(|| {
                        Error::usage(format!(
                            "no `{name}` table: give --{name} PATH|URL or a [[tables]] entry \
                             named {name} in --config (the bundled sample is only found in a \
                             checkout, at ./data/sample)"
                        ))
                    })?;
                    TableSource::new(name, Location::Local(dir.join(name)))
                }
            };
            tables.push(source);
        }
        for t in &config.tables {
            if t.name != EVENTS_TABLE && t.name != MESSAGES_TABLE {
                tables.push(TableSource {
                    name: t.name.clone(),
                    location: config.location_of(t)?,
                    partition_cols: None,
                    format: t.format,
                });
            }
        }
        let memory_limit = match (&flags.memory_limit, &config.engine.memory_limit) {
            (Some(s), _) => {
                Some(parse_bytes(s).map_err(|e| Error::usage(format!("--memory-limit: {e}")))?)
            }
            (None, Some(s)) => Some(
                parse_bytes(s).map_err(|e| config.error(format!("[engine] memory_limit: {e}")))?,
            ),
            (None, None) => None,
        };
        let cluster = match (&flags.cluster, &config.engine.cluster) {
            (Some(text), _) => {
                Some(ClusterUrl::parse(text).map_err(|e| Error::usage(format!("--cluster: {e}")))?)
            }
            (None, Some(text)) => Some(
                ClusterUrl::parse(text)
                    .map_err(|e| config.error(format!("[engine] cluster: {e}")))?,
            ),
            (None, None) => None,
        };
        let scratch = match (&flags.scratch, &config.engine.scratch) {
            (Some(text), _) => {
                Some(Location::parse(text).map_err(|e| Error::usage(format!("--scratch: {e}")))?)
            }
            (None, Some(text)) => Some(
                Location::parse(text)
                    .map_err(|e| config.error(format!("[engine] scratch: {e}")))?,
            ),
            (None, None) => None,
        };
        // Executors resolve a relative path in their own working
        // directory: it is made absolute here, where the user meant it.
        let scratch = match scratch {
            Some(Location::Local(p)) if p.is_relative() => {
                Some(Location::Local(std::path::absolute(&p).map_err(|e| {
                    Error::usage(format!("--scratch {}: {e}", p.display()))
                })?))
            }
            other => other,
        };
        let tz = match (&flags.tz, &config.defaults.tz) {
            (Some(z), _) => parse_tz(z).map_err(|e| Error::usage(format!("--tz: {e}")))?,
            (None, Some(z)) => {
                parse_tz(z).map_err(|e| config.error(format!("[defaults] tz: {e}")))?
            }
            (None, None) => Tz::UTC,
        };
        let or_config = |flag: &Vec<String>, configured: &Vec<String>| {
            if flag.is_empty() {
                configured.clone()
            } else {
                flag.clone()
            }
        };
        Ok(Self {
            engine: EngineOptions {
                tables,
                memory_limit,
                temp_dir: flags
                    .temp_dir
                    .clone()
                    .or_else(|| config.engine.temp_dir.clone()),
                target_partitions: flags.target_partitions.or(config.engine.target_partitions),
                batch_size: config.engine.batch_size,
                s3: config.storage.s3.clone(),
                datafusion_options: config.datafusion_options(),
                sql_views: false,
                no_url_tables: false,
                cluster,
                scratch,
            },
            tz,
            filters: Filters {
                tags: or_config(&flags.tags, &config.defaults.tags),
                content_types: or_config(&flags.content_types, &config.defaults.content_types),
                senders: or_config(&flags.senders, &config.defaults.senders),
            },
            now: env.now,
        })
    }

    /// The local date of `now` in the settings' zone (the job's default run
    /// date).
    pub fn today(&self) -> NaiveDate {
        self.now.with_timezone(&self.tz).date_naive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env {
            now: DateTime::from_timestamp(1_772_000_000, 0).unwrap(),
            sample: Some(PathBuf::from("/opt/sample")),
        }
    }

    const CONFIG: &str = r#"
[[tables]]
name = "events"
uri = "s3://lake/events/"
partition_cols = ["date"]

[[tables]]
name = "accounts"
uri = "/data/accounts"

[engine]
memory_limit = "2GiB"
temp_dir = "/var/tmp/sf"
target_partitions = 4
batch_size = 4096

[defaults]
tz = "Europe/Paris"
tags = ["outage"]
"#;

    #[test]
    fn defaults_without_flags_or_config() {
        let s = Settings::resolve(&Flags::default(), &Config::default(), &env()).unwrap();
        let loc = |n: &str| s.engine.table(n).unwrap().location.to_string();
        assert_eq!(loc("events"), "/opt/sample/events");
        assert_eq!(loc("messages"), "/opt/sample/messages");
        assert_eq!(s.engine.tables.len(), 2);
        assert_eq!(s.engine.memory_limit, None);
        assert_eq!(s.engine.target_partitions, None);
        assert_eq!(s.tz, Tz::UTC);
        assert_eq!(s.filters, Filters::default());
        assert_eq!(s.today(), NaiveDate::from_ymd_opt(2026, 2, 25).unwrap());
    }

    #[test]
    fn config_over_defaults() {
        let config = Config::parse(CONFIG, "job.toml").unwrap();
        let s = Settings::resolve(&Flags::default(), &config, &env()).unwrap();
        let events = s.engine.table("events").unwrap();
        assert_eq!(events.location.to_string(), "s3://lake/events/");
        assert_eq!(events.partition_cols, Some(vec!["date".to_string()]));
        assert_eq!(
            s.engine.table("messages").unwrap().location.to_string(),
            "/opt/sample/messages"
        );
        assert_eq!(
            s.engine.table("accounts").unwrap().location.to_string(),
            "/data/accounts"
        );
        assert_eq!(s.engine.memory_limit, Some(2 << 30));
        assert_eq!(s.engine.temp_dir, Some(PathBuf::from("/var/tmp/sf")));
        assert_eq!(s.engine.target_partitions, Some(4));
        assert_eq!(s.engine.batch_size, Some(4096));
        assert_eq!(s.tz, chrono_tz::Europe::Paris);
        assert_eq!(s.filters.tags, vec!["outage".to_string()]);
    }

    #[test]
    fn flags_over_config() {
        let config = Config::parse(CONFIG, "job.toml").unwrap();
        let flags = Flags {
            events: Some("local/events".into()),
            memory_limit: Some("512MiB".into()),
            temp_dir: Some("/tmp/spill".into()),
            target_partitions: Some(2),
            tz: Some("America/New_York".into()),
            tags: vec!["billing".into()],
            senders: vec!["bot".into()],
            ..Flags::default()
        };
        let s = Settings::resolve(&flags, &config, &env()).unwrap();
        let events = s.engine.table("events").unwrap();
        assert_eq!(events.location, Location::Local("local/events".into()));
        // the config's partition check was for the table it named
        assert_eq!(events.partition_cols, None);
        assert_eq!(s.engine.memory_limit, Some(512 << 20));
        assert_eq!(s.engine.temp_dir, Some(PathBuf::from("/tmp/spill")));
        assert_eq!(s.engine.target_partitions, Some(2));
        assert_eq!(s.engine.batch_size, Some(4096));
        assert_eq!(s.tz, chrono_tz::America::New_York);
        assert_eq!(s.filters.tags, vec!["billing".to_string()]);
        assert_eq!(s.filters.senders, vec!["bot".to_string()]);
        assert!(s.filters.content_types.is_empty());
    }

    #[test]
    fn errors_name_the_flag_or_the_key() {
        let config = Config::parse(CONFIG, "job.toml").unwrap();
        let bad = |flags: Flags, config: &Config| {
            Settings::resolve(&flags, config, &env())
                .unwrap_err()
                .to_string()
        };
        let e = bad(
            Flags {
                memory_limit: Some("lots".into()),
                ..Flags::default()
            },
            &config,
        );
        assert!(e.starts_with("--memory-limit: `lots` is not a size"), "{e}");
        let e = bad(
            Flags {
                tz: Some("Mars/Olympus".into()),
                ..Flags::default()
            },
            &config,
        );
        assert!(
            e.starts_with("--tz: unknown time zone `Mars/Olympus`"),
            "{e}"
        );
        let bad_config = Config::parse("[defaults]\ntz = \"Nowhere\"\n", "job.toml").unwrap();
        let e = bad(Flags::default(), &bad_config);
        assert!(
            e.starts_with("job.toml: [defaults] tz: unknown time zone"),
            "{e}"
        );
        let e = bad(
            Flags {
                events: Some("://x".into()),
                ..Flags::default()
            },
            &config,
        );
        assert!(e.starts_with("--events: ://x: not a valid URL"), "{e}");
        let no_sample = Env {
            sample: None,
            ..env()
        };
        let e = Settings::resolve(&Flags::default(), &Config::default(), &no_sample)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `events` table: give --events"), "{e}");
    }
}
