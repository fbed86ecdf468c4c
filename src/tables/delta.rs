//! Delta Lake tables through delta-rs: the job's result tables
//! (`[output] format = "delta"`) and `format = "delta"` tables for SQL.
//!
//! delta-rs is handed the object stores we already build (local files, or
//! S3 from `[storage.s3]` and the `AWS_*` environment); no second set of
//! credentials or HTTP clients.
//!
//! **Concurrent writers.** A commit is the object `_delta_log/<version>.json`
//! created with a conditional put (`If-None-Match: *` on S3; a hard link on
//! local disk), so of two writers racing for one version exactly one
//! succeeds. The loser re-reads the log and checks the winner's commit for a
//! conflict; delta-rs reports one whenever the winner added files, whatever
//! their partitions, and nothing of the loser becomes visible. Since a
//! result write replaces its partitions whatever they hold, the loser then
//! redoes its write on the new version: both commit, in order, and each
//! partition holds one run's rows. S3 has had conditional puts since August 2024 (as have MinIO and
//! R2); a store without them (`AWS_CONDITIONAL_PUT=disabled`) makes every
//! commit fail rather than risk a corrupt log. No locking table (DynamoDB)
//! is needed.

use std::sync::{Arc, Once};

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, ArrayRef, Date32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::logical_expr::Expr;
use datafusion::prelude::{col, lit, SessionContext};
use deltalake_core::kernel::transaction::{CommitProperties, TransactionError};
use deltalake_core::logstore::{
    default_logstore, logstore_factories, LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig,
};
use deltalake_core::protocol::SaveMode;
use deltalake_core::{DeltaResult, DeltaTable, DeltaTableBuilder, DeltaTableError};
use object_store::ObjectStore;
use url::Url;

use crate::error::{Error, Result};
use crate::settings::location::Location;

/// delta-rs's default log store (commits by conditional put) for `s3://`;
/// delta-rs itself registers only `file://` and `memory://`.
struct ConditionalPutLogStore;

impl LogStoreFactory for ConditionalPutLogStore {
    fn with_options(
        &self,
        prefixed: ObjectStoreRef,
        root: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(prefixed, root, location, options))
    }
}

fn register_schemes() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in ["s3://", "s3a://"] {
            if let Ok(url) = Url::parse(scheme) {
                logstore_factories().insert(url, Arc::new(ConditionalPutLogStore));
            }
        }
    });
}

/// The table's URL (with a trailing slash) and the unprefixed store for it:
/// our S3 store for the bucket, or the local file system (a local table's
/// directory is created).
fn table_store(ctx: &SessionContext, location: &Location) -> Result<(Url, Arc<dyn ObjectStore>)> {
    register_schemes();
    match location {
        Location::Local(path) => {
            std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
            let abs = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
            let url = Url::from_directory_path(&abs)
                .map_err(|()| Error::location(location, "not an absolute path"))?;
            Ok((url, Arc::new(object_store::local::LocalFileSystem::new())))
        }
        Location::Remote(url) => {
            let mut url = url.clone();
            if !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
            }
            crate::io::storage::ensure_store(ctx, &url)?;
            let store_url = datafusion::execution::object_store::ObjectStoreUrl::parse(
                &url[..url::Position::BeforePath],
            )?;
            let store = ctx.runtime_env().object_store(&store_url)?;
            Ok((url, store))
        }
    }
}

fn delta_error(location: &Location, e: DeltaTableError) -> Error {
    Error::location(location, format!("Delta table: {e}"))
}

/// Opens the Delta table at `location`; `Ok(None)` when there is none yet.
pub async fn open(ctx: &SessionContext, location: &Location) -> Result<Option<DeltaTable>> {
    let (url, store) = table_store(ctx, location)?;
    let mut table = DeltaTableBuilder::from_url(url.clone())
        .map_err(|e| delta_error(location, e))?
        .with_storage_backend(store, url)
        .build()
        .map_err(|e| delta_error(location, e))?;
    match table.load().await {
        Ok(()) => Ok(Some(table)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(delta_error(location, e)),
    }
}

/// Opens the table, creating it with `schema` and `partitions` when there
/// is none. Two jobs creating one table at once: one creates it, the other
/// finds it.
async fn open_or_create(
    ctx: &SessionContext,
    location: &Location,
    schema: &SchemaRef,
    partitions: &[&str],
) -> Result<DeltaTable> {
    if let Some(t) = open(ctx, location).await? {
        return Ok(t);
    }
    let (url, store) = table_store(ctx, location)?;
    let table = DeltaTableBuilder::from_url(url.clone())
        .map_err(|e| delta_error(location, e))?
        .with_storage_backend(store, url)
        .build()
        .map_err(|e| delta_error(location, e))?;
    use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel as _;
    let kernel: deltalake_core::kernel::StructType = schema
        .as_ref()
        .try_into_kernel()
        .map_err(|e| Error::location(location, format!("Delta schema: {e}")))?;
    let created = table
        .create()
        .with_columns(kernel.fields().cloned())
        .with_partition_columns(partitions.iter().map(|p| p.to_string()))
        .with_save_mode(SaveMode::Ignore)
        .await;
    match created {
        Ok(t) => Ok(t),
        // Another writer created it between our look and our commit.
        Err(_) => open(ctx, location)
            .await?
            .ok_or_else(|| Error::location(location, "the Delta table could not be created")),
    }
}

/// Replaces the rows matching `predicate` (which must cover every row of
/// `batches`) with `batches`, in one commit: readers see the old rows or
/// the new ones. `batches` may be empty (the partitions are emptied).
pub async fn replace_where(
    ctx: &SessionContext,
    location: &Location,
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    partitions: &[&str],
    predicate: Expr,
) -> Result<u64> {
    let batches = if batches.is_empty() {
        vec![RecordBatch::new_empty(Arc::clone(schema))]
    } else {
        batches
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let table = open_or_create(ctx, location, schema, partitions).await?;
        let written = table
            .write(batches.clone())
            .with_save_mode(SaveMode::Overwrite)
            .with_partition_columns(partitions.iter().map(|p| p.to_string()))
            .with_replace_where(predicate.clone())
            .with_commit_properties(CommitProperties::default())
            .await;
        match written {
            Ok(table) => return Ok(table.version().unwrap_or_default()),
            // Another writer committed first and delta-rs's conflict check
            // (which does not prune by partition values) refused ours. Our
            // write replaces whatever the partitions hold, so it is redone
            // on the new version: both commits land, in order.
            Err(DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(_),
            }) if attempt < CONFLICT_RETRIES => continue,
            Err(e) => return Err(delta_error(location, e)),
        }
    }
}

/// Times a write is redone after losing a commit race.
const CONFLICT_RETRIES: usize = 10;

/// Adds `name = value` as a constant Utf8 column in front of `batch`.
fn with_front(batch: &RecordBatch, columns: Vec<(Field, ArrayRef)>) -> Result<RecordBatch> {
    let mut fields: Vec<Arc<Field>> = columns.iter().map(|(f, _)| Arc::new(f.clone())).collect();
    fields.extend(batch.schema().fields().iter().cloned());
    let mut arrays: Vec<ArrayRef> = columns.into_iter().map(|(_, a)| a).collect();
    arrays.extend(batch.columns().iter().cloned());
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

fn days_since_epoch(d: NaiveDate) -> i32 {
    (d - NaiveDate::default()).num_days() as i32
}

/// The report rows with `report` and `report_date` in front: one
/// partition of the report table.
pub fn report_partition(batch: &RecordBatch, report: &str, date: NaiveDate) -> Result<RecordBatch> {
    let n = batch.num_rows();
    with_front(
        batch,
        vec![
            (
                Field::new("report", DataType::Utf8, false),
                Arc::new(StringArray::from(vec![report; n])),
            ),
            (
                Field::new("report_date", DataType::Date32, false),
                Arc::new(Date32Array::from(vec![days_since_epoch(date); n])),
            ),
        ],
    )
}

/// The predicate of one report partition.
pub fn report_predicate(report: &str, date: NaiveDate) -> Expr {
    col("report").eq(lit(report)).and(col("report_date").eq(lit(
        datafusion::common::ScalarValue::Date32(Some(days_since_epoch(date))),
    )))
}

/// The sessions of a report's period with `report` and `start_date` (the
/// local day the session starts on, in `tz`) in front.
pub fn sessions_partition(
    batch: &RecordBatch,
    report: &str,
    tz: chrono_tz::Tz,
) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let start = batch
        .column_by_name("session_start")
        .ok_or_else(|| Error::Internal("sessions have no session_start".into()))?;
    let micros =
        datafusion::arrow::compute::cast(start, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let micros = micros
        .as_any()
        .downcast_ref::<datafusion::arrow::array::TimestampMicrosecondArray>()
        .ok_or_else(|| Error::Internal("session_start is not a timestamp".into()))?;
    let days: Date32Array = (0..n)
        .map(|i| {
            (!micros.is_null(i)).then(|| {
                let t =
                    chrono::DateTime::from_timestamp_micros(micros.value(i)).unwrap_or_default();
                days_since_epoch(t.with_timezone(&tz).date_naive())
            })
        })
        .collect();
    with_front(
        batch,
        vec![
            (
                Field::new("report", DataType::Utf8, false),
                Arc::new(StringArray::from(vec![report; n])),
            ),
            (
                Field::new("start_date", DataType::Date32, true),
                Arc::new(days),
            ),
        ],
    )
}

/// The predicate covering a report's sessions of local days `[from, to)`.
pub fn sessions_predicate(report: &str, from: NaiveDate, to: NaiveDate) -> Expr {
    let d = |x| {
        lit(datafusion::common::ScalarValue::Date32(Some(
            days_since_epoch(x),
        )))
    };
    col("report")
        .eq(lit(report))
        .and(col("start_date").gt_eq(d(from)))
        .and(col("start_date").lt(d(to)))
}

/// Registers the Delta table at `location` as `name` for SQL; filters on
/// its partition columns prune files.
pub async fn register(ctx: &SessionContext, name: &str, location: &Location) -> Result<()> {
    let table = open(ctx, location).await?.ok_or_else(|| {
        Error::location(
            location,
            format!("table `{name}`: no Delta table here (no _delta_log)"),
        )
    })?;
    let provider = table
        .table_provider()
        .await
        .map_err(|e| Error::location(location, format!("Delta table: {e}")))?;
    ctx.deregister_table(name)?;
    ctx.register_table(name, provider)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::TimestampMicrosecondArray;

    #[test]
    fn partitions_lead_with_report_and_the_local_start_day() {
        let start = chrono::DateTime::parse_from_rfc3339("2026-03-02T03:30:00Z")
            .unwrap()
            .timestamp_micros();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "session_start",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        )]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(
                TimestampMicrosecondArray::from(vec![start]).with_timezone("UTC"),
            )],
        )
        .unwrap();
        // 03:30 UTC is still March 1st in New York
        let ny = sessions_partition(&batch, "daily", chrono_tz::America::New_York).unwrap();
        let utc = sessions_partition(&batch, "daily", chrono_tz::UTC).unwrap();
        let day = |b: &RecordBatch| {
            let d = b.column(1).as_any().downcast_ref::<Date32Array>().unwrap();
            d.value_as_date(0).unwrap()
        };
        assert_eq!(day(&ny), NaiveDate::from_ymd_opt(2026, 3, 1).unwrap());
        assert_eq!(day(&utc), NaiveDate::from_ymd_opt(2026, 3, 2).unwrap());
        assert_eq!(ny.schema().field(0).name(), "report");

        let r = report_partition(
            &batch,
            "weekly",
            NaiveDate::from_ymd_opt(2026, 3, 9).unwrap(),
        )
        .unwrap();
        assert_eq!(r.num_columns(), 3);
        assert_eq!(day(&r), NaiveDate::from_ymd_opt(2026, 3, 9).unwrap());
    }
}
