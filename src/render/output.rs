//! Writing query results: a terminal table, CSV, newline-delimited JSON or
//! Parquet, to stdout or to a file.
//!
//! Files are written next to their destination under a temporary name and
//! renamed into place only once complete, so a failure never leaves a
//! half-written result where a dashboard or a scheduler would read it.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::settings::location::Location;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Aligned table for a person.
    #[default]
    Table,
    /// CSV with a header row.
    Csv,
    /// Newline-delimited JSON, one object per row.
    Json,
    /// Parquet (needs a file destination).
    Parquet,
    /// The report as one self-contained HTML page ([`crate::render::html`]); for
    /// the report only, not for a query's rows.
    Html,
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" | "ndjson" => Ok(Format::Json),
            "parquet" => Ok(Format::Parquet),
            "html" => Ok(Format::Html),
            _ => Err(Error::usage(format!(
                "unknown format `{s}` (expected table, csv, json, parquet or html)"
            ))),
        }
    }
}

impl Format {
    /// Refuses a format that cannot go where it is sent: Parquet is binary,
    /// so it goes to a file, an object or a pipe, never to a terminal.
    /// Commands call this before doing the work.
    pub fn check_destination(self, output: Option<&Location>) -> Result<()> {
        use std::io::IsTerminal;
        if self == Format::Parquet && output.is_none() && io::stdout().is_terminal() {
            return Err(Error::usage(
                "Parquet is binary and standard output is a terminal: give --output FILE, \
                 or send it through a pipe",
            ));
        }
        Ok(())
    }
}

/// Encodes `batches` in `format` into `w`.
pub fn encode<W: Write + Send>(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    mut w: W,
) -> Result<()> {
    match format {
        Format::Table => {
            if batches.iter().all(|b| b.num_rows() == 0) {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                writeln!(w, "({}) 0 rows", names.join(", ")).map_err(stdout_err)?;
            } else {
                writeln!(w, "{}", pretty_format_batches(batches)?).map_err(stdout_err)?;
            }
        }
        Format::Csv => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(w);
            if batches.is_empty() {
                writer.write(&RecordBatch::new_empty(schema.clone()))?;
            }
            for b in batches {
                crate::io::scratch::check()?;
                writer.write(b)?;
            }
        }
        Format::Json => {
            // Every key on every line, nulls included: consumers get the
            // same columns on each row.
            let mut writer = datafusion::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, datafusion::arrow::json::writer::LineDelimited>(w);
            for b in batches {
                crate::io::scratch::check()?;
                writer.write(b)?;
            }
            writer.finish()?;
        }
        Format::Html => {
            return Err(Error::usage(
                "html is a format of the report (`report --format html`), not of query rows: \
                 use table, csv, json or parquet",
            ))
        }
        Format::Parquet => {
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            let mut writer = ArrowWriter::try_new(w, schema.clone(), Some(props))?;
            for b in batches {
                crate::io::scratch::check()?;
                writer.write(b)?;
            }
            writer.close()?;
        }
    }
    Ok(())
}

fn stdout_err(e: io::Error) -> Error {
    Error::io("<stdout>", e)
}

/// Writes the result to `output` (atomically) or to stdout.
pub fn write_result(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    output: Option<&Path>,
) -> Result<()> {
    match output {
        None => {
            format.check_destination(None)?;
            let mut out = BufWriter::new(io::stdout());
            encode(format, schema, batches, &mut out)?;
            out.flush().map_err(stdout_err)?;
            Ok(())
        }
        Some(path) => write_file_atomically(path, |w| encode(format, schema, batches, w)),
    }
}

/// Writes a file through `write` under a temporary name in the same
/// directory, then renames it over `path`. On any error the temporary file is
/// removed and `path` is left as it was.
pub fn write_file_atomically<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    if path.is_dir() {
        return Err(Error::location(
            path.display(),
            "is a directory; a result is written to a file, not into a directory",
        ));
    }
    crate::io::scratch::publish(path, |tmp| {
        let file = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| Error::io(tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(tmp, e))
    })
}

/// Writes `bytes` to `location` so that a reader sees the previous object
/// or the complete new one, never a part: local files are renamed into
/// place, objects are sent with one PUT or a multipart upload that only
/// becomes visible when completed (S3's own guarantee), and that is aborted
/// on failure.
pub async fn put_atomically(
    ctx: &datafusion::prelude::SessionContext,
    location: &Location,
    bytes: Vec<u8>,
) -> Result<()> {
    use object_store::ObjectStore;
    use tokio::io::AsyncWriteExt;

    crate::io::readonly::Inputs::of(ctx).check_output(location)?;

    let url = match location {
        Location::Local(path) => {
            return write_file_atomically(path, |w| {
                w.write_all(&bytes).map_err(|e| Error::io(path, e))
            })
        }
        Location::Remote(url) => url,
    };
    crate::io::storage::ensure_store(ctx, url)?;
    let store_url = datafusion::execution::object_store::ObjectStoreUrl::parse(
        &url[..url::Position::BeforePath],
    )?;
    let store: Arc<dyn ObjectStore> = ctx.runtime_env().object_store(&store_url)?;
    let path = object_store::path::Path::from_url_path(url.path())
        .map_err(|e| Error::location(location, e.to_string()))?;
    if path.as_ref().is_empty() || url.path().ends_with('/') {
        return Err(Error::location(
            location,
            "an output needs an object name, not a bucket or a prefix",
        ));
    }
    let mut writer = object_store::buffered::BufWriter::new(store, path);
    let result = writer.write_all(&bytes).await;
    // An interrupted command completes no upload.
    let result = result
        .and_then(|()| crate::io::scratch::check().map_err(|e| io::Error::other(e.to_string())));
    let result = match result {
        Ok(()) => writer.shutdown().await,
        Err(e) => {
            // Nothing was completed; make sure a started upload is dropped
            // too. (Only before shutdown: a writer that began shutting down
            // cannot be aborted, and its failed upload never becomes visible.)
            let _ = writer.abort().await;
            Err(e)
        }
    };
    result.map_err(|e| Error::location(location, format!("writing failed: {e}")))
}

/// Encodes the result and writes it to `location` atomically (see
/// [`put_atomically`]); stdout when `location` is `None`.
pub async fn write_result_to(
    ctx: &datafusion::prelude::SessionContext,
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    location: Option<&Location>,
) -> Result<()> {
    match location {
        Some(loc @ Location::Remote(_)) => {
            crate::io::readonly::Inputs::of(ctx).check_output(loc)?;
            let mut bytes = Vec::new();
            encode(format, schema, batches, &mut bytes)?;
            put_atomically(ctx, loc, bytes).await
        }
        Some(loc @ Location::Local(path)) => {
            crate::io::readonly::Inputs::of(ctx).check_output(loc)?;
            write_result(format, schema, batches, Some(path))
        }
        None => write_result(format, schema, batches, None),
    }
}
