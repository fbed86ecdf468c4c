//! The client's side of a cluster query: what goes to the cluster, and
//! watching the Ballista job it becomes.
//!
//! [`ClusterPlanner`] wraps Ballista's query planner:
//!
//! * a plan that reads a table Ballista cannot ship (an in-memory table,
//!   the `report(…)` table function, a Delta table) is planned and run in
//!   this process instead of failing with "LogicalExtensionCodec is not
//!   provided": the job's incremental state and `report()` in `sql
//!   --cluster` work (the report itself still runs its steps on the
//!   cluster);
//! * every job sent is watched ([`WatchedJob`]): when the client stops
//!   reading it (an interrupt, a statement timeout, an error elsewhere) the
//!   job is cancelled on the scheduler, and a job the scheduler no longer
//!   knows (a restarted scheduler) fails within two checks instead of
//!   being waited for. Jobs still running when the process is interrupted
//!   are cancelled by [`cancel_live_jobs`].

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{CancelJobParams, GetJobStatusParams};
use ballista_core::utils::create_grpc_client_endpoint;
use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::{source_as_provider, ViewTable};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::context::{QueryPlanner, SessionState};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion_proto::protobuf::LogicalPlanNode;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream};

/// How often a running job's status is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long a status request or a cancel may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Jobs this process sent that have not ended, with their scheduler.
static LIVE: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

fn live() -> std::sync::MutexGuard<'static, Option<HashMap<String, String>>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Ballista's planner, with the local fallback and the job watch (module
/// docs).
pub struct ClusterPlanner {
    ballista: Arc<dyn QueryPlanner + Send + Sync>,
    endpoint: String,
}

impl fmt::Debug for ClusterPlanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterPlanner")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl ClusterPlanner {
    /// Wraps `ballista` (the planner of a session upgraded for the cluster
    /// at `endpoint`).
    pub fn new(ballista: Arc<dyn QueryPlanner + Send + Sync>, endpoint: String) -> Self {
        Self { ballista, endpoint }
    }
}

/// Whether every table `plan` reads can be shipped to the cluster (Parquet
/// listings and views: what Ballista's codec serializes).
pub fn distributable(plan: &LogicalPlan) -> bool {
    let mut ok = true;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let shippable = source_as_provider(&scan.source).is_ok_and(|p| {
                p.downcast_ref::<ListingTable>().is_some()
                    || p.downcast_ref::<ViewTable>().is_some()
                    || p.downcast_ref::<datafusion::datasource::empty::EmptyTable>()
                        .is_some()
                    || p.downcast_ref::<datafusion::datasource::cte_worktable::CteWorkTable>()
                        .is_some()
            });
            ok &= shippable;
        }
        Ok(if ok {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    ok
}

#[async_trait]
impl QueryPlanner for ClusterPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        if !distributable(logical_plan) {
            let state = session
                .as_any()
                .downcast_ref::<SessionState>()
                .ok_or_else(|| DataFusionError::Internal("not a SessionState".into()))?;
            return DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(
                crate::tables::native::node::NativePlanner,
            )])
            .create_physical_plan(logical_plan, state)
            .await;
        }
        let plan = self
            .ballista
            .create_physical_plan(logical_plan, session)
            .await?;
        let Some(state) = session.as_any().downcast_ref::<SessionState>() else {
            return Ok(plan);
        };
        match plan.downcast_ref::<DistributedQueryExec<LogicalPlanNode>>() {
            Some(job) => Ok(Arc::new(WatchedJob {
                job: job.clone(),
                inner: Arc::clone(&plan),
                endpoint: self.endpoint.clone(),
                again: Arc::new(Again {
                    plan: logical_plan.clone(),
                    state: state.clone(),
                    ballista: Arc::clone(&self.ballista),
                }),
            })),
            None => Ok(plan),
        }
    }
}

/// How many times a job the cluster cancelled is sent again.
const MAX_RESENDS: u32 = 3;

/// A Ballista job, watched while its results are read (module docs).
#[derive(Debug)]
pub struct WatchedJob {
    /// The same node as `inner` (its job id is shared between clones).
    job: DistributedQueryExec<LogicalPlanNode>,
    inner: Arc<dyn ExecutionPlan>,
    endpoint: String,
    again: Arc<Again>,
}

/// What sending a job again takes: its plan, as planned the first time.
struct Again {
    plan: LogicalPlan,
    state: SessionState,
    ballista: Arc<dyn QueryPlanner + Send + Sync>,
}

impl fmt::Debug for Again {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Again")
    }
}

impl Again {
    /// A new job for the same query, and its result stream.
    async fn send(
        self: Arc<Self>,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DFResult<(
        DistributedQueryExec<LogicalPlanNode>,
        SendableRecordBatchStream,
    )> {
        let plan = self
            .ballista
            .create_physical_plan(&self.plan, &self.state)
            .await?;
        let job = plan
            .downcast_ref::<DistributedQueryExec<LogicalPlanNode>>()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("a job planned as no job".into()))?;
        let stream = plan.execute(partition, context)?;
        Ok((job, stream))
    }
}

impl DisplayAs for WatchedJob {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WatchedJob: scheduler={}", self.endpoint)
    }
}

impl ExecutionPlan for WatchedJob {
    fn name(&self) -> &str {
        "WatchedJob"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.inner]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
        ) -> DFResult<TreeNodeRecursion>,
    ) -> DFResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let inner = children
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Internal("WatchedJob has one child".into()))?;
        let job = inner
            .downcast_ref::<DistributedQueryExec<LogicalPlanNode>>()
            .cloned()
            .unwrap_or_else(|| self.job.clone());
        Ok(Arc::new(WatchedJob {
            job,
            inner,
            endpoint: self.endpoint.clone(),
            again: Arc::clone(&self.again),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DFResult<SendableRecordBatchStream> {
        let inner = self.inner.execute(partition, Arc::clone(&context))?;
        let schema = inner.schema();
        let tick = tokio::time::interval_at(tokio::time::Instant::now() + CHECK_EVERY, CHECK_EVERY);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            JobStream {
                inner,
                job: self.job.clone(),
                guard: JobGuard {
                    endpoint: self.endpoint.clone(),
                    id: None,
                    done: false,
                },
                tick,
                check: None,
                unknown: 0,
                sent: 0,
                emitted: false,
                polled: false,
                resend: None,
                again: Arc::clone(&self.again),
                partition,
                context,
            },
        )))
    }
}

/// Cancels its job on the scheduler when dropped before the job ended.
struct JobGuard {
    endpoint: String,
    id: Option<String>,
    done: bool,
}

impl JobGuard {
    fn arm(&mut self, id: String) {
        live()
            .get_or_insert_with(HashMap::new)
            .insert(id.clone(), self.endpoint.clone());
        self.id = Some(id);
    }

    fn finish(&mut self) {
        self.done = true;
        if let Some(id) = &self.id {
            if let Some(jobs) = live().as_mut() {
                jobs.remove(id);
            }
        }
    }
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Some(id) = self.id.take() else {
            return;
        };
        // An interrupted command cancels what is left with
        // `cancel_live_jobs`, once its runtime is gone.
        if crate::io::scratch::interrupted() {
            return;
        }
        let endpoint = self.endpoint.clone();
        // Dropped inside the runtime (a query cancelled, timed out, or
        // failed elsewhere): cancel in the background.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let counted = Cancelling::start();
            handle.spawn(async move {
                if cancel(&endpoint, &id, SUBMIT_WAIT).await {
                    if let Some(jobs) = live().as_mut() {
                        jobs.remove(&id);
                    }
                }
                drop(counted);
            });
        }
    }
}

/// Cancels of dropped jobs still under way in the background.
static CANCELLING: AtomicUsize = AtomicUsize::new(0);

/// Counts one background cancel while it lives.
struct Cancelling;

impl Cancelling {
    fn start() -> Self {
        CANCELLING.fetch_add(1, Ordering::SeqCst);
        Cancelling
    }
}

impl Drop for Cancelling {
    fn drop(&mut self) {
        CANCELLING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits, at most `within`, for the background cancels of dropped jobs: a
/// command that ends right after a query failed (another of its jobs being
/// cancelled) would otherwise drop them with its runtime, and leave the
/// job running.
pub async fn settle(within: Duration) {
    let start = tokio::time::Instant::now();
    while CANCELLING.load(Ordering::SeqCst) > 0 && start.elapsed() < within {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long a stream dropped while its job was being sent waits for the
/// scheduler's answer naming the job, to cancel it.
const SUBMIT_WAIT: Duration = Duration::from_secs(30);

/// A job's result stream, watched.
struct JobStream {
    inner: SendableRecordBatchStream,
    job: DistributedQueryExec<LogicalPlanNode>,
    guard: JobGuard,
    tick: tokio::time::Interval,
    check: Option<BoxFuture<'static, Option<String>>>,
    /// Checks in a row that found the job unknown to the scheduler (a job
    /// is briefly unknown while it is being accepted).
    unknown: u32,
    /// Times the job was sent again.
    sent: u32,
    /// Whether a batch was given out (a job is sent again only before).
    emitted: bool,
    /// Whether the stream was read: the job's request may have gone out.
    polled: bool,
    resend: Option<ResendFuture>,
    again: Arc<Again>,
    partition: usize,
    context: Arc<TaskContext>,
}

impl Drop for JobStream {
    /// The job may have been accepted since the stream was last polled: its
    /// id is then known to the plan sending it but not yet to the guard,
    /// which would let a query cancelled in between leave its job running.
    /// Arming the guard here makes its own drop, which follows, cancel it.
    ///
    /// When the id is not known yet but the stream was read, the scheduler
    /// may already have accepted the job while its answer is on its way:
    /// the request is then read on in the background until the answer
    /// names the job, which is cancelled.
    fn drop(&mut self) {
        if self.guard.id.is_some() || self.guard.done {
            return;
        }
        if let Some(id) = self.job.job_id() {
            self.guard.arm(id.to_string());
            return;
        }
        if !self.polled || crate::io::scratch::interrupted() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let schema = self.inner.schema();
        let mut inner = std::mem::replace(
            &mut self.inner,
            Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::empty(),
            )),
        );
        let job = self.job.clone();
        let endpoint = self.guard.endpoint.clone();
        let counted = Cancelling::start();
        handle.spawn(async move {
            let named = futures::future::poll_fn(|cx| loop {
                if let Some(id) = job.job_id() {
                    return Poll::Ready(Some(id.to_string()));
                }
                match inner.as_mut().poll_next(cx) {
                    Poll::Pending => {
                        return match job.job_id() {
                            Some(id) => Poll::Ready(Some(id.to_string())),
                            None => Poll::Pending,
                        }
                    }
                    // Ended or failed before naming a job: nothing to cancel.
                    Poll::Ready(None | Some(Err(_))) => return Poll::Ready(None),
                    Poll::Ready(Some(Ok(_))) => {}
                }
            });
            if let Ok(Some(id)) = tokio::time::timeout(SUBMIT_WAIT, named).await {
                // Known to `cancel_live_jobs` meanwhile (an interrupt).
                live()
                    .get_or_insert_with(HashMap::new)
                    .insert(id.clone(), endpoint.clone());
                if cancel(&endpoint, &id, SUBMIT_WAIT).await {
                    if let Some(jobs) = live().as_mut() {
                        jobs.remove(&id);
                    }
                }
            }
            drop(counted);
        });
    }
}

type ResendFuture = BoxFuture<
    'static,
    DFResult<(
        DistributedQueryExec<LogicalPlanNode>,
        SendableRecordBatchStream,
    )>,
>;

impl Stream for JobStream {
    type Item = DFResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        this.polled = true;
        loop {
            if let Some(resend) = this.resend.as_mut() {
                match resend.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => {
                        this.resend = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                    Poll::Ready(Ok((job, stream))) => {
                        this.resend = None;
                        this.job = job;
                        this.inner = stream;
                        this.guard = JobGuard {
                            endpoint: this.guard.endpoint.clone(),
                            id: None,
                            done: false,
                        };
                        this.unknown = 0;
                    }
                }
            }
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(None) => {
                    this.guard.finish();
                    return Poll::Ready(None);
                }
                // The cluster cancelled the job (an executor was lost, or
                // it could no longer progress): before any row was given
                // out, it is sent again, computed anew from the start.
                Poll::Ready(Some(Err(e)))
                    if !this.emitted && this.sent < MAX_RESENDS && worth_resending(&e) =>
                {
                    this.guard.finish();
                    this.sent += 1;
                    log::warn!(
                        "the cluster at {} cancelled a job of this query; sending it again \
                         ({} of {MAX_RESENDS})",
                        this.guard.endpoint,
                        this.sent
                    );
                    this.resend = Some(
                        Arc::clone(&this.again)
                            .send(this.partition, Arc::clone(&this.context))
                            .boxed(),
                    );
                    continue;
                }
                Poll::Ready(Some(Err(e))) => {
                    // Failed on the cluster: nothing left to cancel.
                    this.guard.finish();
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(batch))) => {
                    this.emitted = true;
                    return Poll::Ready(Some(Ok(batch)));
                }
                Poll::Pending => break,
            }
        }
        if this.guard.id.is_none() {
            if let Some(id) = this.job.job_id() {
                this.guard.arm(id.to_string());
            }
        }
        if this.check.is_none() && this.tick.poll_tick(cx).is_ready() {
            if let Some(id) = this.guard.id.clone() {
                let endpoint = this.guard.endpoint.clone();
                this.check = Some(unknown_job(endpoint, id).boxed());
            }
        }
        if let Some(check) = this.check.as_mut() {
            if let Poll::Ready(found) = check.as_mut().poll(cx) {
                this.check = None;
                match found {
                    Some(problem) if this.unknown >= 1 => {
                        this.guard.finish();
                        return Poll::Ready(Some(Err(DataFusionError::Execution(problem))));
                    }
                    Some(_) => this.unknown += 1,
                    None => this.unknown = 0,
                }
                // Ask again at the next tick.
                let _ = this.tick.poll_tick(cx);
            }
        }
        Poll::Pending
    }
}

/// Whether a job's failure is one the cluster asks to start over from:
/// cancelled by the scheduler (an executor was lost, or the job could no
/// longer progress), or a stage that lost its input with an executor
/// (`stage_max_failures` is 1: see `scheduler`).
fn worth_resending(e: &DataFusionError) -> bool {
    let text = e.to_string();
    text.contains(" failed: Cancelled")
        || (text.contains(" failed: ") && text.contains("has failed 1 times"))
}

async fn client(endpoint: &str) -> Option<SchedulerGrpcClient<tonic::transport::Channel>> {
    let ep = create_grpc_client_endpoint(endpoint.to_string(), None).ok()?;
    let channel = tokio::time::timeout(RPC_TIMEOUT, ep.connect())
        .await
        .ok()?
        .ok()?;
    Some(SchedulerGrpcClient::new(channel))
}

/// `Some(problem)` when the scheduler answers that it does not know job
/// `id` (it was restarted: the job is lost and would never end).
async fn unknown_job(endpoint: String, id: String) -> Option<String> {
    let mut c = client(&endpoint).await?;
    let answer = tokio::time::timeout(
        RPC_TIMEOUT,
        c.get_job_status(GetJobStatusParams { job_id: id.clone() }),
    )
    .await
    .ok()?
    .ok()?
    .into_inner();
    match answer.status.and_then(|s| s.status) {
        None => Some(format!(
            "the scheduler no longer knows job {id} (was it restarted?): the query's work is \
             lost; run it again"
        )),
        Some(_) => None,
    }
}

/// Asks the scheduler at `endpoint` to cancel job `id`, and to cancel it
/// again while it may still run: Ballista 55 stops only a job already
/// planned, so a job cancelled while it was being planned would run once
/// planned. A job with no status yet (the scheduler records it after it
/// answers) counts as one that may run. Gives up after `within`.
async fn cancel(endpoint: &str, id: &str, within: Duration) -> bool {
    use ballista_core::serde::protobuf::job_status::Status;
    let Some(mut c) = client(endpoint).await else {
        return false;
    };
    let start = tokio::time::Instant::now();
    let mut sent_at = None;
    loop {
        if sent_at.is_none_or(|t: tokio::time::Instant| t.elapsed() >= Duration::from_secs(1)) {
            let sent = tokio::time::timeout(
                RPC_TIMEOUT,
                c.cancel_job(CancelJobParams {
                    job_id: id.to_string(),
                }),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            if !sent {
                return false;
            }
            sent_at = Some(tokio::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = tokio::time::timeout(
            RPC_TIMEOUT,
            c.get_job_status(GetJobStatusParams {
                job_id: id.to_string(),
            }),
        )
        .await;
        let Ok(Ok(answer)) = status else {
            return true;
        };
        let live = matches!(
            answer.into_inner().status.and_then(|s| s.status),
            None | Some(Status::Queued(_) | Status::Running(_))
        );
        if !live || start.elapsed() >= within {
            return true;
        }
    }
}

/// Cancels every job this process sent that has not ended (an interrupted
/// command: its runtime is gone, so this runs in one of its own); returns
/// how many could not be cancelled.
pub async fn cancel_live_jobs() -> usize {
    let jobs: Vec<(String, String)> = live()
        .take()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default();
    // At once, each within a bound: the process is stopping.
    let done = futures::future::join_all(
        jobs.iter()
            .map(|(id, endpoint)| cancel(endpoint, id, INTERRUPTED_WAIT)),
    )
    .await;
    done.into_iter().filter(|cancelled| !cancelled).count()
}

/// How long an interrupted command keeps cancelling a job again.
const INTERRUPTED_WAIT: Duration = Duration::from_secs(2);

/// Whether jobs of this process are running on a cluster.
pub fn any_live() -> bool {
    live().as_ref().is_some_and(|m| !m.is_empty())
}
