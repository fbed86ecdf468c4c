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
    pub(crate) fn new(
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

/// What a [`NativeNode`] or a [`NativeExec`] is besides its input: the
/// form the cluster's codecs (`cluster::codec`) send to the scheduler and
/// the executors.
#[derive(Debug, Clone, PartialEq)]
pub struct Wire {
    /// The relation's view name.
    pub relation: String,
    /// Output columns by index (`None`: all).
    pub projection: Option<Vec<usize>>,
    /// `[lo, hi)` on `session_start`, in ticks.
    pub range: Range,
    /// `events.ts`'s type.
    pub ts_type: DataType,
    /// Execution only: rows of `events` if known, output partitions, the
    /// build's knobs (bits, buckets, always_spill).
    pub rows: Option<usize>,
    /// See [`Wire::rows`].
    pub partitions: usize,
    /// See [`Wire::rows`].
    pub options: (u32, Option<usize>, bool, bool),
}

fn relation_named(name: &str) -> DfResult<Relation> {
    Relation::ALL
        .into_iter()
        .find(|r| r.name() == name)
        .ok_or_else(|| DataFusionError::Internal(format!("no native relation `{name}`")))
}

impl NativeNode {
    /// Its wire form.
    pub fn to_wire(&self) -> Wire {
        Wire {
            relation: self.relation.name().to_string(),
            projection: self.projection.clone(),
            range: self.range,
            ts_type: self.ts_type.clone(),
            rows: None,
            partitions: 0,
            options: (64, None, false, false),
        }
    }

    /// The node `wire` describes, over `input`.
    pub fn from_wire(wire: &Wire, input: LogicalPlan) -> DfResult<Self> {
        Self::new(
            relation_named(&wire.relation)?,
            input,
            wire.projection.clone(),
            wire.range,
            wire.ts_type.clone(),
        )
    }
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
    /// The operators read `events` with its strings as views when it is a
    /// listing of files ([`viewed`]); planned here, so that the scan is
    /// planned (its files listed, their statistics read) once.
    pub fn new(
        relation: Relation,
        events: Arc<dyn TableProvider>,
        ts_type: &DataType,
    ) -> crate::Result<Self> {
        let events = viewed(&events)?.unwrap_or(events);
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
    /// When a query last asked for the build.
    used: std::sync::Mutex<Option<std::time::Instant>>,
    /// A full run's fold, for the next build's scan to route.
    tap: std::sync::Mutex<Option<Arc<super::tap::FoldTap>>>,
    /// Nothing reads the files again in this process after the next
    /// report ([`NativeCache::single_use`]).
    single_use: std::sync::atomic::AtomicBool,
}

/// What a build depends on: the files (location, size, modification time,
/// ETag) and the options; on a cluster's executor also the client's
/// session, so that a build serves the jobs of one client (a report's
/// statements, a `sql` session's queries) as it does in one process, and
/// each new client builds from the files afresh.
type Key = (Files, NativeOptions, Option<String>);

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

    /// Says that nothing in this process reads these files again after
    /// the next report (a one-off `report` command): the report then lets
    /// go of the build once its tables are made, as it does under a memory
    /// limit, rather than keeping it for queries that will not come.
    pub fn single_use(&self) {
        self.single_use
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// See [`Self::single_use`].
    pub fn is_single_use(&self) -> bool {
        self.single_use.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Hands `tap` to the next build made in one process: its scan routes
    /// the rows of a full run's fold ([`super::tap`]).
    pub fn tap_next_build(&self, tap: Arc<super::tap::FoldTap>) {
        *self.tap.lock().unwrap_or_else(|e| e.into_inner()) = Some(tap);
    }

    /// Says that the next query of `relation` is the last to read the
    /// buckets of the build it holds ([`Built::last_read_by`]): that query
    /// lets go of each bucket as soon as its rows are made. A query that
    /// reads a bucket after it fails. The build's counts stay readable
    /// until [`Self::release`]. Without a build held, nothing changes.
    pub async fn last_read_by(&self, relation: Relation) {
        if let Some((_, built)) = self.slot.lock().await.as_ref() {
            built.last_read_by(relation);
        }
    }

    /// Lets go of the build it holds (its memory returns to the pool once
    /// the last query reading it ends).
    pub async fn release(&self) {
        *self.slot.lock().await = None;
    }

    /// Lets go of the build once no query has asked for it for `idle` (a
    /// task of this process's runtime looks every `idle / 4`); queries
    /// still reading it keep it until they end.
    pub fn release_when_idle(self: &Arc<Self>, idle: std::time::Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let cache = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(idle / 4).await;
                let Some(cache) = cache.upgrade() else {
                    return;
                };
                if cache.idle_for(idle) {
                    let mut slot = cache.slot.lock().await;
                    // Asked for while we waited for the lock: still in use.
                    let still = cache.idle_for(idle);
                    if still {
                        *slot = None;
                    }
                }
            }
        });
    }

    /// Whether no query has asked for the build for `idle`.
    fn idle_for(&self, idle: std::time::Duration) -> bool {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() >= idle)
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
        let session = opts.single_task.then(|| client_session(&input.task));
        let key = files_of(&input.input).map(|f| (f, opts.clone(), session));
        let mut slot = self.slot.lock().await;
        *self.used.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
        if let (Some(k), Some((cached, built))) = (&key, slot.as_ref()) {
            if k == cached {
                return Ok(Arc::clone(built));
            }
        }
        // The old build's memory goes before the new one is made.
        *slot = None;
        let mut input = input;
        if let (Some(k), false) = (&key, opts.single_task) {
            let tap = self.tap.lock().unwrap_or_else(|e| e.into_inner()).take();
            input.tap = tap.filter(|t| t.claim(digest(k), &input.task.runtime_env()));
        }
        self.builds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let built = Arc::new(if opts.single_task {
            // A cluster's executor runs each task on a runtime of as many
            // threads as it has task slots (often one): the one task that
            // builds a whole relation gets the machine's cores instead.
            let opts = opts.clone();
            build_runtime()?
                .spawn(async move { build::build(input, &opts).await })
                .await
                .map_err(|e| {
                    crate::Error::Internal(format!("the operators' build failed: {e}"))
                })??
        } else {
            build::build(input, opts).await?
        });
        // On a cluster's executor the build's profile goes to its log (the
        // client's `report -v` has no access to it).
        #[cfg(feature = "cluster")]
        if opts.single_task {
            log::info!("operators built: {}", built.profile);
        }
        *self.profile.lock().unwrap_or_else(|e| e.into_inner()) = Some(built.profile.clone());
        *self.repeated.lock().unwrap_or_else(|e| e.into_inner()) =
            key.clone().map(|k| (k, built.repeated_id_udf()));
        if let Some(k) = key {
            *slot = Some((k, Arc::clone(&built)));
        }
        *self.used.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
        Ok(built)
    }
}

/// The runtime single-task builds run on (see [`NativeCache::get`]): one
/// thread per core, made when first needed, for the life of the process.
fn build_runtime() -> crate::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<Result<tokio::runtime::Runtime, String>> =
        std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
                .thread_name("supportfunnel-build")
                // as deep as the process's own workers (plans nest deeply)
                .thread_stack_size(16 << 20)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| crate::Error::Internal(format!("no threads for the operators' build: {e}")))
}

/// The client session a cluster's task serves: the `supportfunnel.client`
/// setting its client sends (`cluster::node`), else its session id.
fn client_session(task: &TaskContext) -> String {
    client_of(task.session_config(), &task.session_id())
}

/// The client a session of a cluster serves: its `supportfunnel.client`
/// setting, else `session_id` (see [`client_session`]).
pub fn client_of(config: &datafusion::prelude::SessionConfig, session_id: &str) -> String {
    config
        .options()
        .entries()
        .into_iter()
        .find(|e| e.key == "supportfunnel.client")
        .and_then(|e| e.value)
        .unwrap_or_else(|| session_id.to_string())
}

/// Whether `plan` holds an operator that builds its relation in one task
/// (as on a cluster's executor), which is fastest where its client's build
/// already is.
pub fn builds_in_one_task(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if let Some(native) = (plan.as_ref() as &dyn std::any::Any).downcast_ref::<NativeExec>() {
        if native.options.single_task {
            return true;
        }
    }
    plan.children().into_iter().any(builds_in_one_task)
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
        .table(Relation::EventCounts.name())
        .await?
        .aggregate(
            vec![],
            vec![datafusion::functions_aggregate::expr_fn::count(
                datafusion::prelude::lit(1),
            )],
        )?
        .create_physical_plan()
        .await?;
    Ok(native_key(&plan).map(|key| (cache, plan, key)))
}

/// A function of an event_id, true when its hash was seen on more than one
/// row of `ctx`'s `events` as the files are now (see
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

/// A build key's digest, by which a fold's tap knows its build.
fn digest(key: &Key) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// The digest of the key a build of `ctx`'s `events` as the files are now
/// would have (see [`super::tap::FoldTap::take`]); `None` when `ctx` reads
/// the SQL views.
pub async fn build_key_digest(ctx: &SessionContext) -> crate::Result<Option<u64>> {
    Ok(current_key(ctx).await?.map(|(_, _, key)| digest(&key)))
}

/// The build key of the first operator in `plan`.
fn native_key(plan: &Arc<dyn ExecutionPlan>) -> Option<Key> {
    if let Some(n) = plan.downcast_ref::<NativeExec>() {
        return files_of(&n.input).map(|f| (f, n.options.clone(), None));
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

/// Says that `ctx`'s sessions read their files once more, in one report
/// ([`NativeCache::single_use`]); nothing when it has no operators.
pub fn single_use(ctx: &SessionContext) {
    if let Some(cache) = ctx.state().config().get_extension::<NativeCache>() {
        cache.single_use();
    }
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
        let partitions = if relation.by_session() && !options.single_task {
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

impl NativeExec {
    /// Its wire form.
    pub fn to_wire(&self) -> Wire {
        Wire {
            relation: self.relation.name().to_string(),
            projection: Some(self.columns.clone()),
            range: self.range,
            ts_type: self.ts_type.clone(),
            rows: self.rows,
            partitions: self.properties.output_partitioning().partition_count(),
            options: (
                self.options.id_hash_bits,
                self.options.buckets,
                self.options.always_spill,
                self.options.single_task,
            ),
        }
    }

    /// The scan it builds from.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// The `events` table it reads a few rows of again.
    pub fn events(&self) -> &Arc<dyn TableProvider> {
        &self.events
    }

    /// The operator `wire` describes, over `input` and `events`, building
    /// into `cache` (an executor's: [`executor_cache`]).
    pub fn from_wire(
        wire: &Wire,
        input: Arc<dyn ExecutionPlan>,
        events: Arc<dyn TableProvider>,
        cache: Arc<NativeCache>,
    ) -> DfResult<Self> {
        let relation = relation_named(&wire.relation)?;
        let ts_type = wire.ts_type.clone();
        let columns = match &wire.projection {
            Some(c) => c.clone(),
            None => (0..relation.schema(&ts_type).fields().len()).collect(),
        };
        let (id_hash_bits, buckets, always_spill, single_task) = wire.options;
        Self::new(
            relation,
            input,
            events,
            columns,
            wire.range,
            ts_type,
            wire.rows,
            cache,
            NativeOptions {
                id_hash_bits,
                buckets,
                always_spill,
                single_task,
            },
            wire.partitions,
        )
    }
}

/// How long an executor keeps a build no task has asked for: the report's
/// jobs follow one another within seconds, while an executor lives for
/// days and must not hold a finished query's build.
pub const EXECUTOR_BUILD_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// The cache of this process's executor: one build shared by the tasks of
/// every job over the same files, let go after [`EXECUTOR_BUILD_IDLE`].
pub fn executor_cache() -> Arc<NativeCache> {
    static CACHE: std::sync::OnceLock<Arc<NativeCache>> = std::sync::OnceLock::new();
    Arc::clone(CACHE.get_or_init(|| {
        let cache = Arc::new(NativeCache::default());
        cache.release_when_idle(EXECUTOR_BUILD_IDLE);
        cache
    }))
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
        )?;
        if self.options.single_task {
            let files = files_of(&self.input).map_or(0, |f| f.len());
            write!(f, ", one task over {files} files")?;
        }
        Ok(())
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
        // A single task's scan is its own: no rule splits its files again
        // and no cluster gives it only a slice of them (`one_group`).
        if self.options.single_task {
            vec![]
        } else {
            vec![&self.input]
        }
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false; self.children().len()]
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
        if self.options.single_task {
            return Ok(self);
        }
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
            input: if self.options.single_task {
                // Split again for this task's threads (see `one_group`).
                let threads = context.session_config().target_partitions().max(1);
                match self
                    .input
                    .repartitioned(threads, context.session_config().options())
                {
                    Ok(Some(split)) => split,
                    Ok(None) => Arc::clone(&self.input),
                    Err(e) => return Err(e),
                }
            } else {
                Arc::clone(&self.input)
            },
            events: Arc::clone(&self.events),
            task: Arc::clone(&context),
            rows: self.rows,
            threads: partitions.max(context.session_config().target_partitions()),
            tap: None,
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
        let ahead = if self.options.single_task {
            context.session_config().target_partitions().max(1)
        } else {
            1
        };
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
                .map(move |b| {
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
                                    .bucket(b, relation)
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
                // One task emitting a whole relation makes its buckets on
                // every thread, in order; partitions make theirs one at a
                // time (the partitions are the parallelism).
                .buffered(ahead)
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

/// `plan` with all its files in one group when it is a file scan: the one
/// task of a cluster's stage then gets every file (Ballista gives a task
/// only its stage's slice of the groups), without the shuffle of every row
/// that gathering the partitions would cost. The task splits the files
/// again for its threads ([`NativeExec::execute`]).
fn one_group(plan: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
    let Some(config) = plan
        .downcast_ref::<DataSourceExec>()
        .and_then(|ds| ds.data_source().as_ref().downcast_ref::<FileScanConfig>())
    else {
        return Arc::clone(plan);
    };
    let mut seen = std::collections::HashSet::new();
    let files: Vec<_> = config
        .file_groups
        .iter()
        .flat_map(|g| g.files())
        .filter(|f| seen.insert(f.object_meta.location.clone()))
        .map(|f| {
            let mut whole = f.clone();
            whole.range = None;
            whole
        })
        .collect();
    DataSourceExec::from_data_source(
        FileScanConfigBuilder::from(config.clone())
            .with_file_groups(vec![FileGroup::new(files)])
            .build(),
    )
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

/// `events` with its strings read as Utf8View, when it is a listing of
/// files (else `None`): the same listing, options and files, the string
/// columns typed Utf8View, so that DataFusion's Parquet reader makes views
/// into the pages instead of copying every string out of them.
///
/// Only for the operators' reads (their scan and their second reads): each
/// copies what it keeps out of a batch and drops the batch at once, so a
/// view never keeps a page alive for longer (the reason the registered
/// tables read Utf8: see [`crate::tables`]).
pub(super) fn viewed(events: &Arc<dyn TableProvider>) -> DfResult<Option<Arc<dyn TableProvider>>> {
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::datasource::listing::{ListingTable, ListingTableConfig};
    let Some(table) = (events.as_ref() as &dyn std::any::Any).downcast_ref::<ListingTable>() else {
        return Ok(None);
    };
    let partition_columns: Vec<&str> = table
        .options()
        .table_partition_cols
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    let schema = table.schema();
    // The files' columns, in the table's order (it puts the partition
    // columns after them), so a projection of one is one of the other.
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .filter(|f| !partition_columns.contains(&f.name().as_str()))
        .map(|f| match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 => {
                f.as_ref().clone().with_data_type(DataType::Utf8View)
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    let file_schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let config = ListingTableConfig::new_with_multi_paths(table.table_paths().clone())
        .with_listing_options(table.options().clone())
        .with_schema(file_schema);
    Ok(Some(Arc::new(ListingTable::try_new(config)?)))
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
            .filter(|n: &usize| *n > 0)
            // A cluster's scheduler has no registry: the files' footers.
            .or_else(|| {
                datafusion::physical_plan::statistics::StatisticsContext::new()
                    .compute(
                        input.as_ref(),
                        &datafusion::physical_plan::statistics::StatisticsArgs::new(),
                    )
                    .ok()
                    .and_then(|s| s.num_rows.get_value().copied())
            });
        let input = if options.single_task {
            one_group(&input)
        } else {
            input
        };
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
