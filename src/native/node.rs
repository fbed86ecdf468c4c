//! How the operators enter a query plan.
//!
//! * [`NativeView`]: the table provider registered as `sessions`,
//!   `conversations`, `session_conversations` and `event_counts`. Like a
//!   view it gives its plan — a [`NativeNode`] over a scan of `events` —
//!   which the SQL planner inlines, so `EXPLAIN` shows the node;
//! * [`NativeNode`]: the logical extension node (DataFusion's
//!   `UserDefinedLogicalNodeCore`); [`NativePushdown`], an optimizer rule,
//!   narrows it to the columns a query reads and gives it the query's
//!   bounds on `session_start`, so a report over one month only emits that
//!   month's sessions (the filter stays above it, so it may emit more);
//! * [`NativePlanner`]: plans the node as a [`NativeExec`] over the events
//!   scan, whose output partitions DataFusion runs on its cores;
//! * [`NativeCache`]: the session's last build, keyed by the files the scan
//!   reads, shared by every relation and statement until the files change.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{DFSchema, DFSchemaRef, ScalarValue};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{provider_as_source, source_as_provider, TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::{QueryPlanner, SessionState};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::expr::{BinaryExpr, Expr};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    Extension, Filter, LogicalPlan, LogicalPlanBuilder, Operator, Projection, ScalarUDF,
    UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;

use super::build::{self, BuildInput, Built, NativeOptions};
use super::scan::SCAN_COLUMNS;
use super::Relation;

/// The relations' range on `session_start` in ticks: `[lo, hi)`.
pub type Range = (i64, i64);

const ALL: Range = (i64::MIN, i64::MAX);

/// The logical node of one relation over a scan of `events`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NativeNode {
    /// Which relation.
    pub relation: Relation,
    /// The scan of `events` (the columns of [`SCAN_COLUMNS`]).
    pub input: LogicalPlan,
    /// The relation's columns it outputs, by index; all when `None`.
    pub projection: Option<Vec<usize>>,
    /// Only sessions starting in this range are needed.
    pub range: Range,
    ts_type: DataType,
    schema: DFSchemaRef,
}

impl PartialOrd for NativeNode {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (self.relation, &self.projection, self.range).partial_cmp(&(
            other.relation,
            &other.projection,
            other.range,
        ))
    }
}

impl NativeNode {
    fn new(
        relation: Relation,
        input: LogicalPlan,
        projection: Option<Vec<usize>>,
        range: Range,
        ts_type: DataType,
    ) -> DfResult<Self> {
        let full = relation.schema(&ts_type);
        let arrow = match &projection {
            Some(p) => full.project(p)?,
            None => full.as_ref().clone(),
        };
        Ok(Self {
            relation,
            input,
            projection,
            range,
            ts_type,
            schema: Arc::new(DFSchema::try_from(arrow)?),
        })
    }

    fn columns(&self) -> Vec<usize> {
        match &self.projection {
            Some(p) => p.clone(),
            None => (0..self.relation.schema(&self.ts_type).fields().len()).collect(),
        }
    }
}

impl UserDefinedLogicalNodeCore for NativeNode {
    fn name(&self) -> &str {
        "NativeRelation"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "NativeRelation: {}",
            describe(
                self.relation,
                &self
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect::<Vec<_>>(),
                self.range
            )
        )
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> DfResult<Self> {
        let input = inputs
            .pop()
            .ok_or_else(|| DataFusionError::Internal("NativeRelation needs its input".into()))?;
        Ok(Self {
            input,
            ..self.clone()
        })
    }

    fn necessary_children_exprs(&self, _output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        // The scan's columns are all needed, whatever is asked of the node.
        Some(vec![(0..self.input.schema().fields().len()).collect()])
    }
}

fn describe(relation: Relation, columns: &[String], range: Range) -> String {
    let mut s = format!(
        "relation={}, columns=[{}]",
        relation.name(),
        columns.join(", ")
    );
    if range.0 != i64::MIN {
        s.push_str(&format!(", session_start >= {}", range.0));
    }
    if range.1 != i64::MAX {
        s.push_str(&format!(", session_start < {}", range.1));
    }
    s
}

/// The table provider of one relation (see the module docs).
#[derive(Debug)]
pub struct NativeView {
    relation: Relation,
    plan: LogicalPlan,
    schema: SchemaRef,
}

impl NativeView {
    /// The view of `relation` over `events`, whose `ts` has type `ts_type`.
    pub fn new(
        relation: Relation,
        events: Arc<dyn TableProvider>,
        ts_type: &DataType,
    ) -> crate::Result<Self> {
        let schema = events.schema();
        let columns = SCAN_COLUMNS
            .iter()
            .map(|c| schema.index_of(c))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let input = LogicalPlanBuilder::scan("events", provider_as_source(events), Some(columns))?
            .build()?;
        let node = NativeNode::new(relation, input, None, ALL, ts_type.clone())?;
        Ok(Self {
            relation,
            plan: LogicalPlan::Extension(Extension {
                node: Arc::new(node),
            }),
            schema: relation.schema(ts_type),
        })
    }

    /// The relation it computes.
    pub fn relation(&self) -> Relation {
        self.relation
    }
}

#[async_trait]
impl TableProvider for NativeView {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_logical_plan(&'_ self) -> Option<Cow<'_, LogicalPlan>> {
        Some(Cow::Borrowed(&self.plan))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Planned as a view is (filters are applied above the scan).
        let mut plan = LogicalPlanBuilder::from(self.plan.clone());
        if let Some(p) = projection {
            let cols: Vec<Expr> = p
                .iter()
                .map(|&i| datafusion::prelude::col(self.schema.field(i).name()))
                .collect();
            plan = plan.project(cols)?;
        }
        state.create_physical_plan(&plan.build()?).await
    }
}

/// The session's last build (see the module docs).
#[derive(Debug, Default)]
pub struct NativeCache {
    slot: tokio::sync::Mutex<Option<(Key, Arc<Built>)>>,
    /// The last build's repeated-id function, kept when the build is let
    /// go (it is small, and a state's fold asks for it after the report).
    repeated: std::sync::Mutex<Option<(Key, ScalarUDF)>>,
    profile: std::sync::Mutex<Option<build::Profile>>,
    builds: std::sync::atomic::AtomicUsize,
}

/// What a build depends on: the files (location, size, modification time,
/// ETag) and the options.
type Key = (Files, NativeOptions);

/// The files of a scan: (location, size, modification time in ms, ETag)
/// of each, sorted.
type Files = Vec<(String, u64, i64, Option<String>)>;

impl NativeCache {
    /// How many builds it made (each state of the files is built once).
    pub fn builds(&self) -> usize {
        self.builds.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What its last build did (kept after the build is let go).
    pub fn last_profile(&self) -> Option<build::Profile> {
        self.profile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Lets go of the build it holds (its memory returns to the pool once
    /// the last query reading it ends).
    pub async fn release(&self) {
        *self.slot.lock().await = None;
    }

    /// The build it holds, if any.
    pub async fn last(&self) -> Option<Arc<Built>> {
        self.slot.lock().await.as_ref().map(|(_, b)| Arc::clone(b))
    }

    /// The repeated-id function of the last build, if it was keyed `key`.
    fn repeated_for(&self, key: &Key) -> Option<ScalarUDF> {
        match &*self.repeated.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((k, udf)) if k == key => Some(udf.clone()),
            _ => None,
        }
    }

    /// The build for `input`: the cached one while the files are the
    /// same, else a new one (which replaces it).
    async fn get(&self, input: BuildInput, opts: &NativeOptions) -> crate::Result<Arc<Built>> {
        let key = files_of(&input.input).map(|f| (f, opts.clone()));
        let mut slot = self.slot.lock().await;
        if let (Some(k), Some((cached, built))) = (&key, slot.as_ref()) {
            if k == cached {
                return Ok(Arc::clone(built));
            }
        }
        // The old build's memory goes before the new one is made.
        *slot = None;
        self.builds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let built = Arc::new(build::build(input, opts).await?);
        *self.profile.lock().unwrap_or_else(|e| e.into_inner()) = Some(built.profile.clone());
        *self.repeated.lock().unwrap_or_else(|e| e.into_inner()) =
            key.clone().map(|k| (k, built.repeated_id_udf()));
        if let Some(k) = key {
            *slot = Some((k, Arc::clone(&built)));
        }
        Ok(built)
    }
}

/// The session's cache, and a plan of the smallest relation with the key
/// a build of `ctx`'s `events` as the files are now has (the files and
/// options): running the plan makes (or finds) that build. `None` when
/// `ctx` reads the SQL views instead (no operators installed).
async fn current_key(
    ctx: &SessionContext,
) -> crate::Result<Option<(Arc<NativeCache>, Arc<dyn ExecutionPlan>, Key)>> {
    let Some(cache) = ctx.state().config().get_extension::<NativeCache>() else {
        return Ok(None);
    };
    if !ctx.table_exist(Relation::EventCounts.name())? {
        return Ok(None);
    }
    let plan = ctx
        .sql(&format!(
            "SELECT count(*) FROM {}",
            Relation::EventCounts.name()
        ))
        .await?
        .create_physical_plan()
        .await?;
    Ok(native_key(&plan).map(|key| (cache, plan, key)))
}

/// A function of an event_id, true when its hash was seen on more than one
/// valid row of `ctx`'s `events` as the files are now (see
/// [`Built::repeated_id_udf`]): from the session's last build when it read
/// these files (even one let go since), else from a new build. `None` when
/// `ctx` reads the SQL views instead.
pub async fn repeated_ids(ctx: &SessionContext) -> crate::Result<Option<ScalarUDF>> {
    let Some((cache, plan, key)) = current_key(ctx).await? else {
        return Ok(None);
    };
    if let Some(udf) = cache.repeated_for(&key) {
        return Ok(Some(udf));
    }
    datafusion::physical_plan::collect(plan, ctx.task_ctx()).await?;
    Ok(cache.repeated_for(&key))
}

/// Whether the session holds a build of `ctx`'s `events` as the files are
/// now: reading the relations costs no build then.
pub async fn holds_build(ctx: &SessionContext) -> crate::Result<bool> {
    let Some((cache, _, key)) = current_key(ctx).await? else {
        return Ok(false);
    };
    let held = matches!(&*cache.slot.lock().await, Some((k, _)) if *k == key);
    Ok(held)
}

/// The build key of the first operator in `plan`.
fn native_key(plan: &Arc<dyn ExecutionPlan>) -> Option<Key> {
    if let Some(n) = plan.downcast_ref::<NativeExec>() {
        return files_of(&n.input).map(|f| (f, n.options.clone()));
    }
    plan.children().into_iter().find_map(native_key)
}

/// What the operators' last build in `ctx`'s sessions (shared by the
/// sessions forked from it) did, if one ran.
pub fn last_profile(ctx: &SessionContext) -> Option<build::Profile> {
    ctx.state()
        .config()
        .get_extension::<NativeCache>()?
        .last_profile()
}

/// The files a plan's file scan reads, sorted; `None` when it is not one.
fn files_of(plan: &Arc<dyn ExecutionPlan>) -> Option<Files> {
    let mut p = plan;
    loop {
        if let Some(ds) = p.downcast_ref::<DataSourceExec>() {
            let config = ds
                .data_source()
                .as_ref()
                .downcast_ref::<datafusion::datasource::physical_plan::FileScanConfig>()?;
            let mut files: Vec<_> = config
                .file_groups
                .iter()
                .flat_map(|g| g.files())
                .map(|f| {
                    let m = &f.object_meta;
                    (
                        m.location.to_string(),
                        m.size,
                        m.last_modified.timestamp_millis(),
                        m.e_tag.clone(),
                    )
                })
                .collect();
            files.sort();
            return Some(files);
        }
        let children = p.children();
        if children.len() != 1 {
            return None;
        }
        p = children[0];
    }
}

/// The operator of one relation.
#[derive(Debug)]
pub struct NativeExec {
    relation: Relation,
    input: Arc<dyn ExecutionPlan>,
    events: Arc<dyn TableProvider>,
    columns: Vec<usize>,
    range: Range,
    ts_type: DataType,
    schema: SchemaRef,
    rows: Option<usize>,
    cache: Arc<NativeCache>,
    options: NativeOptions,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl NativeExec {
    #[allow(clippy::too_many_arguments)]
    fn new(
        relation: Relation,
        input: Arc<dyn ExecutionPlan>,
        events: Arc<dyn TableProvider>,
        columns: Vec<usize>,
        range: Range,
        ts_type: DataType,
        rows: Option<usize>,
        cache: Arc<NativeCache>,
        options: NativeOptions,
        partitions: usize,
    ) -> DfResult<Self> {
        let schema = Arc::new(relation.schema(&ts_type).project(&columns)?);
        let partitions = if relation.by_session() {
            partitions.max(1)
        } else {
            1
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Self {
            relation,
            input,
            events,
            columns,
            range,
            ts_type,
            schema,
            rows,
            cache,
            options,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    fn with_input(&self, input: Arc<dyn ExecutionPlan>) -> DfResult<Self> {
        Self::new(
            self.relation,
            input,
            Arc::clone(&self.events),
            self.columns.clone(),
            self.range,
            self.ts_type.clone(),
            self.rows,
            Arc::clone(&self.cache),
            self.options.clone(),
            self.properties.output_partitioning().partition_count(),
        )
    }
}

impl DisplayAs for NativeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<String> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        write!(
            f,
            "NativeExec: {}",
            describe(self.relation, &names, self.range)
        )
    }
}

impl ExecutionPlan for NativeExec {
    fn name(&self) -> &str {
        "NativeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("NativeExec needs its input".into()))?;
        Ok(Arc::new(self.with_input(input)?))
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let partitions = self.properties.output_partitioning().partition_count();
        let input = BuildInput {
            input: Arc::clone(&self.input),
            events: Arc::clone(&self.events),
            task: Arc::clone(&context),
            rows: self.rows,
            threads: partitions.max(context.session_config().target_partitions()),
        };
        let cache = Arc::clone(&self.cache);
        let opts = self.options.clone();
        let (relation, columns, range, ts_type, schema) = (
            self.relation,
            self.columns.clone(),
            self.range,
            self.ts_type.clone(),
            Arc::clone(&self.schema),
        );
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let build_time = MetricBuilder::new(&self.metrics).subset_time("build_time", partition);
        let spilled = MetricBuilder::new(&self.metrics).spill_count(partition);
        let spilled_bytes = MetricBuilder::new(&self.metrics).spilled_bytes(partition);
        let buckets_metric = MetricBuilder::new(&self.metrics).gauge("buckets", partition);
        let batch_size = context.session_config().batch_size().max(1);
        let out_schema = Arc::clone(&schema);
        // The build (shared by every partition and relation), then this
        // partition's buckets one at a time: a bucket's rows are made, sent
        // in batches and dropped before the next is made.
        let stream = futures::stream::once(async move {
            let timer = build_time.timer();
            let built = cache
                .get(input, &opts)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            timer.done();
            if partition == 0 {
                spilled.add(built.profile.spilled.0);
                spilled_bytes.add(built.profile.spilled.1 as usize);
                buckets_metric.set(built.buckets());
            }
            if relation == Relation::EventCounts {
                let batch = if partition == 0 {
                    vec![counts_batch(&built, &columns, &schema)?]
                } else {
                    vec![]
                };
                output_rows.add(batch.iter().map(RecordBatch::num_rows).sum());
                return Ok::<_, DataFusionError>(
                    futures::stream::iter(batch.into_iter().map(Ok)).boxed(),
                );
            }
            let buckets: Vec<usize> = (partition..built.buckets()).step_by(partitions).collect();
            let per_bucket = futures::stream::iter(buckets)
                .then(move |b| {
                    let (built, columns, ts_type, schema) = (
                        Arc::clone(&built),
                        columns.clone(),
                        ts_type.clone(),
                        Arc::clone(&schema),
                    );
                    let output_rows = output_rows.clone();
                    async move {
                        let batch =
                            tokio::task::spawn_blocking(move || -> DfResult<RecordBatch> {
                                built
                                    .bucket(b)
                                    .and_then(|bucket| {
                                        bucket.emit(relation, &columns, range, &ts_type, &schema)
                                    })
                                    .map_err(|e| DataFusionError::External(Box::new(e)))
                            })
                            .await
                            .map_err(|e| {
                                DataFusionError::Execution(format!("session task failed: {e}"))
                            })??;
                        output_rows.add(batch.num_rows());
                        let n = batch.num_rows();
                        let slices: Vec<DfResult<RecordBatch>> = (0..n)
                            .step_by(batch_size)
                            .map(|at| Ok(batch.slice(at, batch_size.min(n - at))))
                            .collect();
                        Ok::<_, DataFusionError>(futures::stream::iter(slices))
                    }
                })
                .map(|r| match r {
                    Ok(s) => s.boxed(),
                    Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                })
                .flatten();
            Ok(per_bucket.boxed())
        })
        .map(|r| match r {
            Ok(s) => s,
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        })
        .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, stream)))
    }
}

/// The `event_counts` row.
fn counts_batch(built: &Built, columns: &[usize], schema: &SchemaRef) -> DfResult<RecordBatch> {
    let c = &built.counts;
    let values: Vec<u64> = std::iter::once(c.rows_read)
        .chain(c.rejected)
        .chain([c.duplicate_events, c.orphan_lifecycle_events])
        .collect();
    let arrays = columns
        .iter()
        .map(|&i| Arc::new(Int64Array::from(vec![values[i] as i64])) as _)
        .collect();
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        arrays,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
    )?)
}

/// Plans [`NativeNode`]s.
#[derive(Debug, Default)]
pub struct NativePlanner;

/// The `events` provider under a node's input.
fn events_of(plan: &LogicalPlan) -> Option<Arc<dyn TableProvider>> {
    match plan {
        LogicalPlan::TableScan(scan) => source_as_provider(&scan.source).ok(),
        other => other.inputs().first().and_then(|p| events_of(p)),
    }
}

#[async_trait]
impl ExtensionPlanner for NativePlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        _planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<NativeNode>() else {
            return Ok(None);
        };
        let events = logical_inputs
            .first()
            .and_then(|p| events_of(p))
            .ok_or_else(|| DataFusionError::Plan("NativeRelation without an events scan".into()))?;
        let input = physical_inputs
            .first()
            .cloned()
            .ok_or_else(|| DataFusionError::Plan("NativeRelation without its input".into()))?;
        let config = session.config();
        let cache = config.get_extension::<NativeCache>().unwrap_or_default();
        let options = config
            .get_extension::<NativeOptions>()
            .map(|o| o.as_ref().clone())
            .unwrap_or_default();
        let rows = config
            .get_extension::<crate::tables::Registry>()
            .map(|r| {
                r.infos()
                    .iter()
                    .filter(|t| t.name == crate::tables::EVENTS.name)
                    .map(|t| t.rows as usize)
                    .sum()
            })
            .filter(|n: &usize| *n > 0);
        Ok(Some(Arc::new(NativeExec::new(
            node.relation,
            input,
            events,
            node.columns(),
            node.range,
            node.ts_type.clone(),
            rows,
            cache,
            options,
            config.target_partitions(),
        )?)))
    }
}

/// The query planner with [`NativePlanner`].
#[derive(Debug, Default)]
pub struct NativeQueryPlanner;

#[async_trait]
impl QueryPlanner for NativeQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(NativePlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

/// The node under `plan`, if `plan` is one.
fn native(plan: &LogicalPlan) -> Option<&NativeNode> {
    match plan {
        LogicalPlan::Extension(e) => e.node.as_any().downcast_ref::<NativeNode>(),
        _ => None,
    }
}

fn extension(node: NativeNode) -> LogicalPlan {
    LogicalPlan::Extension(Extension {
        node: Arc::new(node),
    })
}

/// Narrows [`NativeNode`]s to the columns read above them and gives them
/// the bounds on `session_start` of the filters above them.
#[derive(Debug, Default)]
pub struct NativePushdown;

/// `[lo, hi)` in ticks implied by one conjunct on `session_start`, when it
/// is a comparison with a timestamp literal of the column's own unit.
fn bound(e: &Expr, ts_type: &DataType) -> Option<Range> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return None;
    };
    let (op, value) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) if c.name == "session_start" => (*op, v),
        (Expr::Literal(v, _), Expr::Column(c)) if c.name == "session_start" => (op.swap()?, v),
        _ => return None,
    };
    let ticks = match (value, ts_type) {
        (ScalarValue::TimestampSecond(Some(t), _), DataType::Timestamp(u, _))
            if *u == datafusion::arrow::datatypes::TimeUnit::Second =>
        {
            *t
        }
        (ScalarValue::TimestampMillisecond(Some(t), _), DataType::Timestamp(u, _))
            if *u == datafusion::arrow::datatypes::TimeUnit::Millisecond =>
        {
            *t
        }
        (ScalarValue::TimestampMicrosecond(Some(t), _), DataType::Timestamp(u, _))
            if *u == datafusion::arrow::datatypes::TimeUnit::Microsecond =>
        {
            *t
        }
        (ScalarValue::TimestampNanosecond(Some(t), _), DataType::Timestamp(u, _))
            if *u == datafusion::arrow::datatypes::TimeUnit::Nanosecond =>
        {
            *t
        }
        _ => return None,
    };
    Some(match op {
        Operator::GtEq => (ticks, i64::MAX),
        Operator::Gt => (ticks.saturating_add(1), i64::MAX),
        Operator::Lt => (i64::MIN, ticks),
        Operator::LtEq => (i64::MIN, ticks.saturating_add(1)),
        Operator::Eq => (ticks, ticks.saturating_add(1)),
        _ => return None,
    })
}

/// Column indices of `node`'s relation named in `exprs`.
fn used(node: &NativeNode, exprs: &[&Expr]) -> Vec<usize> {
    let full = node.relation.schema(&node.ts_type);
    let mut out: Vec<usize> = exprs
        .iter()
        .flat_map(|e| e.column_refs())
        .filter_map(|c| full.index_of(&c.name).ok())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

impl OptimizerRule for NativePushdown {
    fn name(&self) -> &str {
        "supportfunnel_native_pushdown"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        match &plan {
            LogicalPlan::Filter(f) => {
                let Some(node) = native(&f.input) else {
                    return Ok(Transformed::no(plan));
                };
                if !node.relation.by_session() {
                    return Ok(Transformed::no(plan));
                }
                let mut range = node.range;
                for c in split_conjunction(&f.predicate) {
                    if let Some((lo, hi)) = bound(c, &node.ts_type) {
                        range = (range.0.max(lo), range.1.min(hi));
                    }
                }
                if range == node.range {
                    return Ok(Transformed::no(plan));
                }
                let node = NativeNode {
                    range,
                    ..node.clone()
                };
                let filter = Filter::try_new(f.predicate.clone(), Arc::new(extension(node)))?;
                Ok(Transformed::yes(LogicalPlan::Filter(filter)))
            }
            LogicalPlan::Projection(p) => {
                // Through filters to the node.
                let mut filters: Vec<Expr> = Vec::new();
                let mut below = p.input.as_ref();
                while let LogicalPlan::Filter(f) = below {
                    filters.push(f.predicate.clone());
                    below = f.input.as_ref();
                }
                let Some(node) = native(below) else {
                    return Ok(Transformed::no(plan));
                };
                let exprs: Vec<&Expr> = p.expr.iter().chain(filters.iter()).collect();
                let mut want = used(node, &exprs);
                if want.is_empty() && node.relation == Relation::EventCounts {
                    want.push(0);
                }
                if want == node.columns() {
                    return Ok(Transformed::no(plan));
                }
                let narrowed = NativeNode::new(
                    node.relation,
                    node.input.clone(),
                    Some(want),
                    node.range,
                    node.ts_type.clone(),
                )?;
                let mut input = extension(narrowed);
                for predicate in filters.into_iter().rev() {
                    input = LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(input))?);
                }
                let projection = Projection::try_new(p.expr.clone(), Arc::new(input))?;
                Ok(Transformed::yes(LogicalPlan::Projection(projection)))
            }
            _ => Ok(Transformed::no(plan)),
        }
    }
}

/// A session state with the operators' planner and optimizer rule.
pub fn session_state(config: SessionConfig, runtime: Arc<RuntimeEnv>) -> SessionState {
    let config = if config.get_extension::<NativeCache>().is_some() {
        config
    } else {
        config.with_extension(Arc::new(NativeCache::default()))
    };
    SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_query_planner(Arc::new(NativeQueryPlanner))
        .with_optimizer_rule(Arc::new(NativePushdown))
        .build()
}

/// `ctx` with the operators' planner and rule (see [`session_state`]): the
/// same catalog, functions, settings and runtime. `ctx` itself when it has
/// them already.
pub fn install(ctx: &SessionContext) -> SessionContext {
    let state = ctx.state();
    if state
        .optimizers()
        .iter()
        .any(|r| r.name() == NativePushdown.name())
    {
        return ctx.clone();
    }
    let mut config = state
        .config()
        .clone()
        .with_create_default_catalog_and_schema(false);
    if config.get_extension::<NativeCache>().is_none() {
        config = config.with_extension(Arc::new(NativeCache::default()));
    }
    let state = SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .with_query_planner(Arc::new(NativeQueryPlanner))
        .with_optimizer_rule(Arc::new(NativePushdown))
        .build();
    SessionContext::new_with_state(state)
}

/// Registers the relations' views over the registered `events` table of
/// `ctx` (in place of their SQL views).
pub async fn register_views(ctx: &SessionContext) -> crate::Result<()> {
    let events = ctx.table_provider(crate::tables::EVENTS.name).await?;
    let ts_type = events.schema().field_with_name("ts")?.data_type().clone();
    for relation in Relation::ALL {
        let view = NativeView::new(relation, Arc::clone(&events), &ts_type)?;
        ctx.deregister_table(relation.name())?;
        ctx.register_table(relation.name(), Arc::new(view))?;
    }
    Ok(())
}
