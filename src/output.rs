//! Writing query results: a terminal table, CSV, newline-delimited JSON or
//! Parquet, to stdout or to a file.
//!
//! Files are written next to their destination under a temporary name and
//! renamed into place only once complete, so a failure never leaves a
//! half-written result where a dashboard or a scheduler would read it.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};

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
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" | "ndjson" => Ok(Format::Json),
            "parquet" => Ok(Format::Parquet),
            _ => Err(Error::invalid(format!(
                "unknown format `{s}` (expected table, csv, json or parquet)"
            ))),
        }
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
                writer.write(b)?;
            }
            writer.finish()?;
        }
        Format::Parquet => {
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            let mut writer = ArrowWriter::try_new(w, schema.clone(), Some(props))?;
            for b in batches {
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
            if format == Format::Parquet {
                return Err(Error::invalid(
                    "--format parquet needs --output FILE (Parquet is not written to a terminal)",
                ));
            }
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
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    if path.is_dir() {
        return Err(Error::invalid(format!(
            "{}: is a directory; --output takes a file path",
            path.display()
        )));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        let file = w
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
