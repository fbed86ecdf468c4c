//! `supportfunnel scheduler`: Ballista's scheduler with our session builder.
//!
//! It receives a client's query as a logical plan, resolves it in a session
//! built by [`super::node::node_state`] (our functions, the client's S3
//! settings, the version check), splits it into stages and hands their tasks
//! to the executors that poll it. Job state is kept in memory: a restarted
//! scheduler has forgotten its running queries, and their clients fail with
//! a line saying so.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use ballista_scheduler::scheduler_server::SchedulerServer;
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

/// Cancels every running job when an executor is lost. Ballista 55 would
/// re-run the lost executor's finished stages, and its consumers then read
/// some shuffle partitions twice: a count came out doubled with the job
/// successful (docs/CLUSTER.md). A job computed with no executor lost is
/// exact; a cancelled one is sent again by its client (`jobs`), which is
/// what "the lost executor's tasks run again" means here.
async fn cancel_jobs_on_executor_loss(
    scheduler: SchedulerServer<LogicalPlanNode, PhysicalPlanNode>,
    mut events: ballista_scheduler::cluster::ClusterStateEventStream,
) {
    use ballista_scheduler::cluster::ClusterStateEvent;
    use futures::StreamExt;
    // Jobs that were running when the last executor was lost: Ballista
    // fails them after its grace period unless an executor comes back, in
    // which case they are cancelled then (not re-run).
    let mut orphaned: Vec<ballista_core::JobId> = Vec::new();
    while let Some(event) = events.next().await {
        let running = scheduler.state.task_manager.get_running_job_cache();
        let lost = match event {
            ClusterStateEvent::RemovedExecutor { executor_id } => executor_id,
            ClusterStateEvent::RegisteredExecutor { .. } => {
                let back: Vec<_> = orphaned
                    .drain(..)
                    .filter(|id| running.contains_key(id))
                    .collect();
                if !back.is_empty() {
                    log::warn!(
                        "an executor registered: cancelling the {} job(s) that lost every \
                         executor; their clients send them again",
                        back.len()
                    );
                }
                for id in back {
                    let _ = scheduler.cancel_job(id).await;
                }
                continue;
            }
        };
        if running.is_empty() {
            continue;
        }
        let none_left = scheduler
            .state
            .executor_manager
            .get_executors_state()
            .await
            .map_or(true, |e| e.is_empty());
        if none_left {
            orphaned.extend(running.keys().cloned());
            continue;
        }
        log::warn!(
            "executor {lost} was lost: cancelling the {} running job(s), whose results it may \
             have held; their clients send them again",
            running.len()
        );
        for id in running.keys() {
            let _ = scheduler.cancel_job(id.clone()).await;
        }
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
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| cluster_error(&addr, e))?;
    let scheduler =
        create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config))
            .await
            .map_err(|e| cluster_error(&addr, e))?;
    tokio::spawn(stop_stuck_jobs(
        scheduler.clone(),
        stall_timeout(opts.executor_timeout),
    ));
    let events = scheduler
        .state
        .executor_manager
        .cluster_state_events()
        .await
        .map_err(|e| cluster_error(&addr, e))?;
    tokio::spawn(cancel_jobs_on_executor_loss(scheduler.clone(), events));
    ready(addr);
    start_grpc_service_with_listener(listener, scheduler)
        .await
        .map_err(|e| cluster_error(&addr, e))
}
