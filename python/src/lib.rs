//! `supportfunnel` for Python: the report, SQL over the registered tables
//! and the scheduled job, in-process, returning `pyarrow.Table`s (which
//! carry the Arrow PyCapsule stream, so Polars, DuckDB and pandas take
//! them without a copy).
//!
//! The same engine, settings and config file as the command line: a
//! [`Connection`] is the CLI's settings resolved once (flags, then the
//! config file, then the defaults) and the tables registered once. Queries
//! run on a tokio runtime of this module with the GIL released; Ctrl-C
//! (`KeyboardInterrupt`) stops the query it interrupts.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow_pyarrow::{IntoPyArrow, Table};
use chrono::NaiveDate;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{ParamValues, ScalarValue};
use engine::report::{run_report, ReportOptions};
use engine::settings::config::Config;
use engine::settings::{Env, Flags, Settings};
use engine::{build_context, Engine};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

create_exception!(
    supportfunnel,
    Error,
    PyException,
    "An error of supportfunnel: its message is the command line's one-line message."
);

/// How often a running query looks for a Ctrl-C.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .thread_name("supportfunnel")
                // as deep as the CLI's workers (plans nest deeply)
                .thread_stack_size(16 << 20)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::new_err(format!("cannot start the query threads: {e}")))
}

/// `e` as `supportfunnel.Error`, its message on one line as the CLI
/// prints it ([`engine::error::one_line`]).
fn error(e: engine::Error) -> PyErr {
    let mut line = engine::error::one_line(&e);
    if e.is_resources_exhausted() {
        line.push_str("; the query needs more memory than memory_limit allows: raise it");
    }
    Error::new_err(line)
}

/// Runs `work` on the module's runtime with the GIL released. Every
/// [`SIGNAL_CHECK`] this thread takes the GIL back to look for signals
/// (waiting on a channel, not on the runtime's timers, which busy worker
/// threads would delay): on Ctrl-C the work is aborted (its plan stops,
/// its spill files go) and `KeyboardInterrupt` is raised.
fn run<T: Send + 'static>(
    py: Python<'_>,
    work: impl Future<Output = engine::Result<T>> + Send + 'static,
) -> PyResult<T> {
    let rt = runtime()?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let task = rt.spawn(async move {
        let _ = tx.send(work.await);
    });
    py.detach(move || loop {
        match rx.recv_timeout(SIGNAL_CHECK) {
            Ok(out) => return out.map_err(error),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::new_err("the query stopped without an answer"));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = Python::attach(|py| py.check_signals()) {
                    task.abort();
                    return Err(e);
                }
            }
        }
    })
}

/// `batches` as a `pyarrow.Table` (no copy: Arrow's C interface).
fn to_table(py: Python<'_>, schema: SchemaRef, batches: Vec<RecordBatch>) -> PyResult<Py<PyAny>> {
    let table = Table::try_new(batches, schema).map_err(|e| Error::new_err(e.to_string()))?;
    Ok(table.into_pyarrow(py)?.unbind())
}

/// A date given as `datetime.date` or as text `YYYY-MM-DD`.
fn date_arg(name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<NaiveDate>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let text: String = if value.hasattr("isoformat")? {
        value.call_method0("isoformat")?.extract()?
    } else {
        value.extract()?
    };
    NaiveDate::parse_from_str(&text, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| {
            Error::new_err(format!(
                "{name}: expected a date (YYYY-MM-DD), got {text:?}"
            ))
        })
}

/// A query parameter's value.
fn scalar(value: &Bound<'_, PyAny>) -> PyResult<ScalarValue> {
    if value.is_none() {
        Ok(ScalarValue::Null)
    } else if let Ok(b) = value.extract::<bool>() {
        Ok(ScalarValue::Boolean(Some(b)))
    } else if let Ok(i) = value.extract::<i64>() {
        Ok(ScalarValue::Int64(Some(i)))
    } else if let Ok(f) = value.extract::<f64>() {
        Ok(ScalarValue::Float64(Some(f)))
    } else if let Ok(s) = value.extract::<String>() {
        Ok(ScalarValue::Utf8(Some(s)))
    } else {
        Err(Error::new_err(format!(
            "a query parameter must be None, bool, int, float or str, not {}",
            value.get_type().name()?
        )))
    }
}

/// The settings of a connection: the CLI's flags over the config file.
fn resolve(
    events: Option<String>,
    messages: Option<String>,
    config: Option<String>,
    memory_limit: Option<String>,
) -> engine::Result<(Settings, Config)> {
    let config = match config {
        Some(path) => Config::load(std::path::Path::new(&path))?,
        None => Config::default(),
    };
    let flags = Flags {
        events,
        messages,
        memory_limit,
        ..Flags::default()
    };
    let settings = Settings::resolve(&flags, &config, &Env::from_process())?;
    Ok((settings, config))
}

/// A connection: the tables registered once, the settings resolved once.
/// Made by [`connect`].
#[pyclass(module = "supportfunnel", frozen)]
struct Connection {
    engine: Arc<Engine>,
    settings: Settings,
}

#[pymethods]
impl Connection {
    /// The support funnel report for `date_from` (inclusive) to `date_to`
    /// (exclusive), local days in `tz`, against the period before it: the
    /// rows, columns and values of `report --format parquet`. Without
    /// dates, the default period (the 28 full days before the latest
    /// event). `tags`, `content_types` and `senders` filter the proactive
    /// messages as the CLI's `--tag`, `--content-type`, `--sender`.
    #[pyo3(signature = (date_from=None, date_to=None, tz=None, tags=None, content_types=None, senders=None))]
    fn report(
        &self,
        py: Python<'_>,
        date_from: Option<Bound<'_, PyAny>>,
        date_to: Option<Bound<'_, PyAny>>,
        tz: Option<String>,
        tags: Option<Vec<String>>,
        content_types: Option<Vec<String>>,
        senders: Option<Vec<String>>,
    ) -> PyResult<Py<PyAny>> {
        let from = date_arg("date_from", date_from.as_ref())?;
        let to = date_arg("date_to", date_to.as_ref())?;
        if from.is_some() != to.is_some() {
            return Err(Error::new_err(
                "give both date_from and date_to, or neither (the default period)",
            ));
        }
        let tz = match tz {
            Some(name) => engine::settings::period::parse_tz(&name).map_err(error)?,
            None => self.settings.tz,
        };
        let filters = &self.settings.filters;
        let opts = ReportOptions {
            from,
            to,
            tz: Some(tz),
            tags: tags.unwrap_or_else(|| filters.tags.clone()),
            content_types: content_types.unwrap_or_else(|| filters.content_types.clone()),
            senders: senders.unwrap_or_else(|| filters.senders.clone()),
            progress: None,
            keep_sessions: false,
            now: Some(chrono::Utc::now()),
        };
        let engine = Arc::clone(&self.engine);
        let report = run(py, async move { run_report(&engine, &opts).await })?;
        to_table(py, report.batch.schema(), vec![report.batch])
    }

    /// The result of one SQL statement over the tables, views and
    /// functions (`sessions`, `conversations`, `session_start`, …).
    /// `params` binds `$1, $2, …` (a list) or `$name` (a dict).
    #[pyo3(signature = (query, params=None))]
    fn sql(
        &self,
        py: Python<'_>,
        query: String,
        params: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let params = match params.filter(|p| !p.is_none()) {
            None => None,
            Some(p) => {
                if let Ok(dict) = p.cast::<PyDict>() {
                    let mut named = std::collections::HashMap::new();
                    for (k, v) in dict.iter() {
                        named.insert(k.extract::<String>()?, scalar(&v)?.into());
                    }
                    Some(ParamValues::Map(named))
                } else if let Ok(list) = p.cast::<PyList>() {
                    let values = list
                        .iter()
                        .map(|v| scalar(&v))
                        .collect::<PyResult<Vec<_>>>()?;
                    Some(ParamValues::List(
                        values.into_iter().map(Into::into).collect(),
                    ))
                } else {
                    return Err(Error::new_err("params must be a list or a dict"));
                }
            }
        };
        let ctx = self.engine.ctx.clone();
        let (schema, batches) = run(py, async move {
            engine::engine::context::refresh(&ctx).await?;
            let mut df = ctx.sql(&query).await?;
            if let Some(params) = params {
                df = df.with_param_values(params)?;
            }
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await?;
            Ok((schema, batches))
        })?;
        to_table(py, schema, batches)
    }

    fn __repr__(&self) -> String {
        let tables: Vec<String> = self
            .engine
            .tables
            .iter()
            .map(|t| format!("{}={}", t.name, t.location))
            .collect();
        format!("<supportfunnel.Connection {}>", tables.join(" "))
    }
}

/// Registers the events and messages tables (a Parquet file, a directory,
/// a Hive-partitioned directory or `s3://bucket/prefix`) and their views.
/// `config` is the CLI's config file (tables, S3 settings, engine options,
/// default zone and filters); arguments given here win over it.
/// `memory_limit` is as `--memory-limit` (e.g. `"2GiB"`).
#[pyfunction]
#[pyo3(signature = (events=None, messages=None, config=None, memory_limit=None))]
fn connect(
    py: Python<'_>,
    events: Option<String>,
    messages: Option<String>,
    config: Option<String>,
    memory_limit: Option<String>,
) -> PyResult<Connection> {
    let (settings, _config) = resolve(events, messages, config, memory_limit).map_err(error)?;
    let (opts, tz) = (settings.engine.clone(), settings.tz);
    // With `report(…)` in SQL, as in the CLI's `sql`.
    let engine = run(py, async move { engine::open(&opts, tz).await })?;
    Ok(Connection {
        engine: Arc::new(engine),
        settings,
    })
}

/// Runs every `[[reports]]` of the config file `config` for `date` (a
/// `datetime.date` or `YYYY-MM-DD`; default: today in the config's zone),
/// as `supportfunnel run` does, and returns its summary (a dict: the
/// objects written, the reports that failed, the seconds). Raises
/// `supportfunnel.Error` when a report failed, as `run` exits non-zero.
#[pyfunction]
#[pyo3(signature = (config, date=None))]
fn run_job(py: Python<'_>, config: String, date: Option<Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
    let date = date_arg("date", date.as_ref())?;
    let (settings, config) = resolve(None, None, Some(config), None).map_err(error)?;
    let date = date.unwrap_or_else(|| settings.today());
    let summary = run(py, async move {
        let engine = build_context(&settings.engine).await?;
        engine::job::run_job(&engine, &settings, &config, date).await
    })?;
    let text = serde_json::to_string(&summary).map_err(|e| Error::new_err(e.to_string()))?;
    let summary = py.import("json")?.call_method1("loads", (text,))?;
    if !summary.get_item("ok")?.extract::<bool>()? {
        return Err(Error::new_err(format!(
            "some reports of the job failed: {}",
            summary.get_item("failed")?.repr()?
        )));
    }
    Ok(summary.unbind())
}

#[pymodule]
fn supportfunnel(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(connect, m)?)?;
    m.add_function(wrap_pyfunction!(run_job, m)?)?;
    m.add_class::<Connection>()?;
    m.add("Error", m.py().get_type::<Error>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
