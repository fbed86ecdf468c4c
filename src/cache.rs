//! `sessions` for ad-hoc SQL, computed by the native path and kept while the
//! input files stay the same.
//!
//! The `sessions` view recomputes deduplication, conversation facts and
//! sessionization over the whole history on every query. In an interactive
//! `sql` session the same table is asked for again and again, so there
//! `sessions` is this provider instead: its first scan runs
//! [`History::compute`] over the `events` table of the querying session and
//! keeps the whole history's sessions in memory, keyed by the listing of the
//! events files (location, size, modification time, ETag) as the session's
//! scans see it. A later scan takes that listing again (DataFusion keeps a
//! session's listings in its cache, so usually no request at all) and reuses
//! the rows while it is unchanged, or recomputes them when a file was added,
//! removed or rewritten — exactly when a scan of `events` would read other
//! files. The rows are those of the view, checked by the differential tests
//! (`tests/integration/history.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::Session;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;

use crate::history::{sessions_schema, Detail, History, HistoryOptions};

/// What identifies the state of the input files: (location, size, modified
/// time in ms, ETag) of each, sorted.
type Fingerprint = Vec<(String, u64, i64, Option<String>)>;

/// The `sessions` table, computed natively and cached (see the module docs).
#[derive(Debug)]
pub struct CachedSessions {
    events: Arc<dyn TableProvider>,
    schema: SchemaRef,
    cached: tokio::sync::Mutex<Option<(Fingerprint, Vec<RecordBatch>)>>,
    computations: AtomicUsize,
}

impl CachedSessions {
    /// Sessions over `events`, whose `ts` has type `ts_type`.
    pub fn new(events: Arc<dyn TableProvider>, ts_type: &DataType) -> Self {
        let full = sessions_schema(ts_type);
        // Without the report's `period` tag: the view's columns.
        let schema = Arc::new(
            full.project(&(1..full.fields().len()).collect::<Vec<_>>())
                .expect("in range"),
        );
        Self {
            events,
            schema,
            cached: tokio::sync::Mutex::new(None),
            computations: AtomicUsize::new(0),
        }
    }

    /// How many times the sessions were computed (not reused) so far.
    pub fn computations(&self) -> usize {
        self.computations.load(Ordering::Relaxed)
    }

    async fn fingerprint(&self, state: &dyn Session) -> DfResult<Fingerprint> {
        let mut out = Fingerprint::new();
        let Some(listing) = self.events.downcast_ref::<ListingTable>() else {
            // Not files: nothing to key on, so never reuse.
            return Ok(vec![(
                format!("{:p}", Arc::as_ptr(&self.events)),
                0,
                i64::MIN,
                None,
            )]);
        };
        for url in listing.table_paths() {
            let store = state.runtime_env().object_store(url)?;
            let files: Vec<_> = url
                .list_all_files(state, store.as_ref(), "")
                .await?
                .try_collect()
                .await?;
            for f in files {
                out.push((
                    f.location.to_string(),
                    f.size,
                    f.last_modified.timestamp_millis(),
                    f.e_tag,
                ));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The whole history's sessions, computed now or reused.
    async fn rows(&self, state: &dyn Session) -> DfResult<Vec<RecordBatch>> {
        let key = self.fingerprint(state).await?;
        let mut cached = self.cached.lock().await;
        if let Some((k, batch)) = cached.as_ref() {
            if *k == key {
                return Ok(batch.clone());
            }
        }
        // The rows of other files go, and their memory with them.
        *cached = None;
        let state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| DataFusionError::Internal("sessions: not a SessionState".into()))?;
        // A context over the querying session's own catalog, read only.
        let ctx = SessionContext::new_with_state(state.clone());
        // The computation's memory comes from the pool while it runs (see
        // `reserve_memory`). The rows kept afterwards are not held there:
        // a cache holding the pool would make a later report of the same
        // session wait for ever.
        let _computing = crate::history::reserve_memory(
            &state.runtime_env().memory_pool,
            "sessions (cached)",
            crate::history::native_pool_bytes(crate::tables::events_rows(&ctx)),
        )
        .await;
        let history = History::compute(&ctx, &HistoryOptions::default())
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let (sessions, _) = history
            .tables(&[("all", i64::MIN, i64::MAX)], Detail::Full)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        // One batch per thread that computed them: one partition each.
        let batches = sessions
            .iter()
            .map(|b| {
                let columns = b.columns()[1..].to_vec();
                RecordBatch::try_new(Arc::clone(&self.schema), columns)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        self.computations.fetch_add(1, Ordering::Relaxed);
        *cached = Some((key, batches.clone()));
        Ok(batches)
    }
}

#[async_trait]
impl TableProvider for CachedSessions {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batches = self.rows(state).await?;
        let partitions = batches.into_iter().map(|b| vec![b]).collect();
        let table = MemTable::try_new(Arc::clone(&self.schema), partitions)?;
        table.scan(state, projection, filters, limit).await
    }
}
