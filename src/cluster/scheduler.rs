//! `supportfunnel scheduler`: Ballista's scheduler with our session builder.
//!
//! It receives a client's query as a logical plan, resolves it in a session
//! built by [`super::node::node_state`] (our functions, the client's S3
//! settings, the version check), splits it into stages and hands their tasks
//! to the executors that poll it. Job state is kept in memory: a restarted
//! scheduler has forgotten its running queries, and their clients fail with
//! a line saying so.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ballista_core::serde::protobuf::ExecutorHeartbeat;
use ballista_core::serde::scheduler::{ExecutorData, ExecutorMetadata};
use ballista_scheduler::cluster::{BallistaCluster, BoundTask, ClusterState, ExecutorSlot};
use ballista_scheduler::config::{SchedulerConfig, TaskDistributionPolicy};
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use ballista_scheduler::scheduler_server::SchedulerServer;
use ballista_scheduler::state::task_manager::JobInfoCache;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

use super::node;
use crate::error::{Error, Result};

/// How a scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Address to listen on (port 0: any free port, said on start).
    pub bind: SocketAddr,
    /// Host name executors and clients reach this scheduler by, when it is
    /// not the bind address (a `0.0.0.0` bind).
    pub external_host: Option<String>,
    /// An executor that has not sent a heartbeat for this long is taken as
    /// lost: its tasks run again elsewhere, and when it was the last one,
    /// the running queries fail after the same time again.
    pub executor_timeout: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], super::DEFAULT_SCHEDULER_PORT)),
            external_host: None,
            executor_timeout: Duration::from_secs(60),
        }
    }
}

fn cluster_error(bind: &SocketAddr, e: impl std::fmt::Display) -> Error {
    Error::Cluster {
        cluster: format!("df://{bind}"),
        problem: format!("scheduler: {e}"),
    }
}

/// How long a running job may have no task running and none to run before
/// it is stopped: longer than an executor's loss takes to be noticed and
/// its tasks to be handed out again.
pub fn stall_timeout(executor_timeout: Duration) -> Duration {
    (executor_timeout * 3).max(Duration::from_secs(10))
}

/// Stops the jobs that can no longer end. After an executor is lost,
/// Ballista 55 can leave a job running with no task running and none it
/// will hand out (a task status it could not record), or with tasks ready
/// but a task slot it never gets back; its client would wait forever. Such
/// a job is cancelled after `stall` of that state, which frees what it
/// held; its client runs it again or fails with a line saying so (see
/// `client::explain`).
async fn stop_stuck_jobs(
    scheduler: SchedulerServer<LogicalPlanNode, PhysicalPlanNode>,
    stall: Duration,
) {
    let mut idle: HashMap<String, Instant> = HashMap::new();
    let every = (stall / 4).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        let running = scheduler.state.task_manager.get_running_job_cache();
        idle.retain(|id, _| running.contains_key(id.as_str()));
        // (running tasks, tasks ready to run) of each running job
        let mut jobs = Vec::with_capacity(running.len());
        for (id, info) in running.iter() {
            let graph = info.execution_graph.read().await;
            jobs.push((id, graph.running_tasks().len(), graph.available_tasks()));
        }
        // A job with tasks ready to run waits for a free task slot; while
        // no task of any job runs, no slot is in use, so the wait is a
        // slot Ballista lost count of (a task status it ignored after an
        // executor was lost). With no executor at all, Ballista's own
        // grace period fails the job.
        let cluster_idle = jobs.iter().all(|(_, running, _)| *running == 0);
        let executors = scheduler
            .state
            .executor_manager
            .get_executors_state()
            .await
            .is_ok_and(|e| !e.is_empty());
        for (id, running_tasks, available) in jobs {
            let stuck = running_tasks == 0 && (available == 0 || (cluster_idle && executors));
            if !stuck {
                idle.remove(id.as_str());
                continue;
            }
            let since = idle.entry(id.to_string()).or_insert_with(Instant::now);
            if since.elapsed() >= stall {
                log::warn!(
                    "job {id}: no task running and none to run for {}s; cancelling it (its \
                     client is told)",
                    stall.as_secs()
                );
                let _ = scheduler.cancel_job(id.clone()).await;
                idle.remove(id.as_str());
            }
        }
    }
}

/// The cluster state of the scheduler: Ballista's, with every running job
/// cancelled the moment an executor is removed, before Ballista handles
/// the loss. Ballista 55 re-runs the lost executor's finished stages, and
/// their consumers then read some shuffle partitions twice: a count came
/// out doubled with the job successful (docs/CLUSTER.md). Cancelling from
/// here, the cancellation is queued ahead of Ballista's own loss event, so
/// no job can finish on re-run stages (watching the cluster's events from
/// a task of our own left a window in which a fast job could); a cancelled
/// job is sent again by its client (`jobs`), which is what "the lost
/// executor's tasks run again" means here.
struct CancelOnLoss {
    inner: Arc<dyn ClusterState>,
    scheduler: OnceLock<SchedulerServer<LogicalPlanNode, PhysicalPlanNode>>,
    /// Jobs that were running when the last executor was lost: Ballista
    /// fails them after its grace period unless an executor comes back, in
    /// which case they are cancelled then (before the newcomer can run any
    /// of their reset tasks).
    orphaned: tokio::sync::Mutex<Vec<ballista_core::JobId>>,
    /// The executor each client's operators were built on (its first
    /// one-task build went there), forgotten when that executor is lost.
    /// An entry unused for [`HOME_IDLE`] goes (its executor let go of the
    /// build by then).
    homes: tokio::sync::Mutex<HashMap<String, (String, Instant)>>,
}

impl CancelOnLoss {
    async fn cancel(&self, jobs: Vec<ballista_core::JobId>) {
        let Some(scheduler) = self.scheduler.get() else {
            return;
        };
        for id in jobs {
            let _ = scheduler.cancel_job(id).await;
        }
    }

    fn running(&self) -> Vec<ballista_core::JobId> {
        self.scheduler.get().map_or_else(Vec::new, |s| {
            s.state
                .task_manager
                .get_running_job_cache()
                .keys()
                .cloned()
                .collect()
        })
    }
}

/// How long a client's home executor is remembered after its last build
/// task: longer than an executor keeps an unused build
/// (`native::node::EXECUTOR_BUILD_IDLE`).
const HOME_IDLE: Duration = Duration::from_secs(120);

/// The client of `job` when one of its running stages still has to bind
/// a task that builds the operators' relations in one task.
async fn pending_build(job: &JobInfoCache) -> Option<String> {
    let mut graph = job.execution_graph.write().await;
    let session = graph.session_id().to_string();
    let mut seen = Vec::new();
    while let Some(stage) = graph.fetch_running_stage(&seen) {
        seen.push(stage.stage_id);
        if !stage.pending.is_empty() && crate::tables::native::node::builds_in_one_task(&stage.plan)
        {
            return Some(crate::tables::native::node::client_of(
                &stage.session_config,
                &session,
            ));
        }
    }
    None
}

#[async_trait::async_trait]
impl ClusterState for CancelOnLoss {
    async fn init(&self) -> ballista_core::error::Result<()> {
        self.inner.init().await
    }

    /// Ballista's binding, with one rule of ours first: a task that builds
    /// the operators' relations in one task goes to the executor that ran
    /// its client's first such task, where the build is cached (the
    /// client's later jobs read it there instead of building it again
    /// elsewhere). It waits for that executor's slot; the job's other
    /// stages wait with it while it is pending.
    async fn bind_schedulable_tasks(
        &self,
        distribution: TaskDistributionPolicy,
        active_jobs: Arc<HashMap<ballista_core::JobId, JobInfoCache>>,
        executors: Option<HashSet<String>>,
    ) -> ballista_core::error::Result<Vec<BoundTask>> {
        let mut homes = self.homes.lock().await;
        homes.retain(|_, (_, used)| used.elapsed() < HOME_IDLE);
        let mut bound = Vec::new();
        let mut rest = HashMap::new();
        // One job with a build task at a time: the first one's binding
        // makes the home the next ones go to, in this round already.
        for (id, info) in active_jobs.iter() {
            let Some(client) = pending_build(info).await else {
                rest.insert(id.clone(), info.clone());
                continue;
            };
            let home = homes.get(&client).map(|(executor, _)| executor.clone());
            let on = match &home {
                Some(executor) if executors.as_ref().is_some_and(|e| !e.contains(executor)) => {
                    continue;
                }
                Some(executor) => Some(HashSet::from([executor.clone()])),
                None => executors.clone(),
            };
            let job = Arc::new(HashMap::from([(id.clone(), info.clone())]));
            let tasks = self
                .inner
                .bind_schedulable_tasks(distribution.clone(), job, on)
                .await?;
            if let Some((executor, _)) = tasks
                .iter()
                .find(|(_, task)| crate::tables::native::node::builds_in_one_task(&task.plan))
            {
                homes.insert(client, (executor.clone(), Instant::now()));
            }
            bound.extend(tasks);
        }
        drop(homes);
        bound.extend(
            self.inner
                .bind_schedulable_tasks(distribution, Arc::new(rest), executors)
                .await?,
        );
        Ok(bound)
    }

    async fn unbind_tasks(
        &self,
        executor_slots: Vec<ExecutorSlot>,
    ) -> ballista_core::error::Result<()> {
        self.inner.unbind_tasks(executor_slots).await
    }

    async fn register_executor(
        &self,
        metadata: ExecutorMetadata,
        spec: ExecutorData,
    ) -> ballista_core::error::Result<()> {
        let running = self.running();
        let back: Vec<_> = {
            let mut orphaned = self.orphaned.lock().await;
            orphaned
                .drain(..)
                .filter(|id| running.contains(id))
                .collect()
        };
        if !back.is_empty() {
            log::warn!(
                "an executor registered: cancelling the {} job(s) that lost every executor; \
                 their clients send them again",
                back.len()
            );
            self.cancel(back).await;
        }
        self.inner.register_executor(metadata, spec).await
    }

    async fn save_executor_metadata(
        &self,
        metadata: ExecutorMetadata,
    ) -> ballista_core::error::Result<()> {
        self.inner.save_executor_metadata(metadata).await
    }

    async fn get_executor_metadata(
        &self,
        executor_id: &str,
    ) -> ballista_core::error::Result<ExecutorMetadata> {
        self.inner.get_executor_metadata(executor_id).await
    }

    async fn registered_executor_metadata(&self) -> Vec<ExecutorMetadata> {
        self.inner.registered_executor_metadata().await
    }

    async fn save_executor_heartbeat(
        &self,
        heartbeat: ExecutorHeartbeat,
    ) -> ballista_core::error::Result<()> {
        self.inner.save_executor_heartbeat(heartbeat).await
    }

    async fn remove_executor(&self, executor_id: &str) -> ballista_core::error::Result<()> {
        let running = self.running();
        if !running.is_empty() {
            let others = self
                .inner
                .registered_executor_metadata()
                .await
                .iter()
                .filter(|m| m.id != executor_id)
                .count();
            if others == 0 {
                self.orphaned.lock().await.extend(running);
            } else {
                log::warn!(
                    "executor {executor_id} was lost: cancelling the {} running job(s), whose \
                     results it may have held; their clients send them again",
                    running.len()
                );
                self.cancel(running).await;
            }
        }
        self.homes
            .lock()
            .await
            .retain(|_, (executor, _)| executor != executor_id);
        self.inner.remove_executor(executor_id).await
    }

    fn executor_heartbeats(&self) -> HashMap<String, ExecutorHeartbeat> {
        self.inner.executor_heartbeats()
    }

    fn get_executor_heartbeat(&self, executor_id: &str) -> Option<ExecutorHeartbeat> {
        self.inner.get_executor_heartbeat(executor_id)
    }

    async fn cluster_state_events(
        &self,
    ) -> ballista_core::error::Result<ballista_scheduler::cluster::ClusterStateEventStream> {
        self.inner.cluster_state_events().await
    }
}

/// Runs a scheduler until the process is stopped. `ready` is called with
/// the address it listens on once it accepts connections.
pub async fn run_scheduler(opts: &SchedulerOptions, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.bind)
        .await
        .map_err(|e| cluster_error(&opts.bind, format!("cannot listen on {}: {e}", opts.bind)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| cluster_error(&opts.bind, e))?;
    let timeout = opts.executor_timeout.as_secs().max(2);
    let mut config = SchedulerConfig::default()
        .with_port(addr.port())
        .with_override_config_producer(Arc::new(node::node_config))
        .with_override_session_builder(Arc::new(node::node_state));
    config.bind_host = addr.ip().to_string();
    config.external_host = opts
        .external_host
        .clone()
        .unwrap_or_else(|| addr.ip().to_string());
    config.executor_timeout_seconds = timeout;
    config.expire_dead_executor_interval_seconds = (timeout / 4).clamp(1, 15);
    config.no_executors_grace_period_seconds = timeout;
    // A stage whose input could not be fetched (its executor died) fails
    // the job rather than re-running the finished stage that wrote it:
    // re-run, its consumers can read some partitions twice (a count
    // doubled, the job successful). The failed job is sent again by its
    // client (`jobs`). A failed task alone still runs again.
    config.stage_max_failures = 1;
    config.override_logical_codec = Some(Arc::new(super::codec::LogicalCodec::default()));
    config.override_physical_codec = Some(Arc::new(super::codec::PhysicalCodec::default()));
    config.validate().map_err(|e| cluster_error(&addr, e))?;
    let memory = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| cluster_error(&addr, e))?;
    let guard = Arc::new(CancelOnLoss {
        inner: memory.cluster_state(),
        scheduler: OnceLock::new(),
        orphaned: Default::default(),
        homes: Default::default(),
    });
    let cluster = BallistaCluster::new(guard.clone(), memory.job_state());
    let scheduler =
        create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config))
            .await
            .map_err(|e| cluster_error(&addr, e))?;
    tokio::spawn(stop_stuck_jobs(
        scheduler.clone(),
        stall_timeout(opts.executor_timeout),
    ));
    let _ = guard.scheduler.set(scheduler.clone());
    ready(addr);
    start_grpc_service_with_listener(listener, scheduler)
        .await
        .map_err(|e| cluster_error(&addr, e))
}
