//! `supportfunnel executor`: Ballista's executor with our functions and
//! object stores.
//!
//! It registers with a scheduler, polls it for tasks, runs each task's plan
//! (deserialized with [`super::node::function_registry`], so
//! `session_start` and `id_hash` resolve) in a runtime from
//! [`super::node::node_runtime`] (S3 with the settings the query carried),
//! writes shuffle output under its work directory and serves it to other
//! executors over Arrow Flight.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::JobId;
use ballista_executor::execution_engine::{
    DefaultExecutionEngine, ExecutionEngine, QueryStageExecutor,
};
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use datafusion::error::Result as DFResult;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};
use datafusion::prelude::SessionConfig;

use super::{node, ClusterUrl};
use crate::error::{Error, Result};

/// How an executor runs.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler to register with.
    pub scheduler: ClusterUrl,
    /// Address to listen on.
    pub bind_host: String,
    /// Arrow Flight port (other executors and clients fetch results here).
    pub port: u16,
    /// gRPC port (the scheduler's calls).
    pub grpc_port: u16,
    /// Host name the scheduler and other executors reach this one by, when
    /// it is not the bind address.
    pub external_host: Option<String>,
    /// Shuffle files (`shuffle/`) and spills (`spill/`), emptied at start;
    /// a private temporary directory, removed on exit, when `None`. One
    /// executor per directory.
    pub work_dir: Option<PathBuf>,
    /// Tasks run at once (Ballista's vcores); the cores when 0.
    pub concurrent_tasks: usize,
    /// Memory all running tasks may use before spilling (bytes), shared
    /// evenly among the task slots; 70% of the machine's when `None`.
    pub memory_limit: Option<u64>,
    /// How often the executor tells the scheduler it is alive; keep it well
    /// under the scheduler's `--executor-timeout`.
    pub heartbeat_interval: Duration,
}

/// How often the executor looks for job directories nobody will read.
pub const CLEAN_UP_INTERVAL: Duration = Duration::from_secs(600);

/// A job directory untouched this long is removed (longer than any job).
pub const JOB_DATA_TTL: Duration = Duration::from_secs(6 * 3600);

/// Runs an executor until the process is stopped or the scheduler tells it
/// to stop.
pub async fn run_executor(opts: &ExecutorOptions) -> Result<()> {
    let cluster_error = |problem: String| Error::Cluster {
        cluster: opts.scheduler.to_string(),
        problem,
    };
    // A private work directory lives as long as this function, and is
    // removed by an interrupt too (see `scratch`).
    let private;
    let work_dir = match &opts.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            dir.clone()
        }
        None => {
            private =
                crate::io::scratch::temp_dir_in(&std::env::temp_dir(), "supportfunnel-executor-")?;
            private.path().to_path_buf()
        }
    };
    // Shuffle files and spill files apart, so that the sweep of old job
    // directories never touches a spill directory in use. What an earlier
    // executor left there (killed, or its scheduler gone before it said to
    // clean up) belongs to no job this one will run: a new executor has a
    // new id, so nothing can ask for those files again.
    let shuffle = work_dir.join("shuffle");
    let spill = work_dir.join("spill");
    for dir in [&shuffle, &spill] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let work = shuffle.to_string_lossy().to_string();
    let spill = spill.to_string_lossy().to_string();
    let config = ExecutorProcessConfig {
        bind_host: opts.bind_host.clone(),
        external_host: opts.external_host.clone(),
        port: opts.port,
        grpc_port: opts.grpc_port,
        scheduler_host: opts.scheduler.host.clone(),
        scheduler_port: opts.scheduler.port,
        // Started before its scheduler (a reboot), it keeps trying this long.
        scheduler_connect_timeout_seconds: 30,
        vcores: opts.concurrent_tasks,
        work_dir: Some(work),
        print_thread_info: false,
        executor_heartbeat_interval_seconds: opts.heartbeat_interval.as_secs().max(1),
        memory_pool_size: opts.memory_limit,
        override_function_registry: Some(Arc::new(node::function_registry())),
        override_config_producer: Some(Arc::new(node::node_config)),
        override_logical_codec: Some(Arc::new(super::codec::LogicalCodec::default())),
        override_physical_codec: Some(Arc::new(super::codec::PhysicalCodec::default())),
        override_runtime_producer: Some(Arc::new(move |config| {
            node::node_runtime(config, Some(&spill))
        })),
        // A job's shuffle files go when its scheduler says so; these catch
        // what a lost scheduler never said: job directories untouched for
        // JOB_DATA_TTL are removed every CLEAN_UP_INTERVAL.
        job_data_clean_up_interval_seconds: CLEAN_UP_INTERVAL.as_secs(),
        job_data_ttl_seconds: JOB_DATA_TTL.as_secs(),
        override_execution_engine: Some(Arc::new(YieldingEngine(DefaultExecutionEngine::new()))),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| cluster_error(format!("executor: {e}")))
}

/// Ballista's execution engine, with every operator below a task's shuffle
/// writer wrapped in DataFusion's [`CooperativeExec`], which hands the
/// thread back to the runtime every so many batches. A cancelled task stops
/// only when its future yields, and an operator that makes many batches
/// out of few (a join with many matches, feeding an aggregate) never
/// yields on its own: cancelled, it kept its executor busy to the end. (Its
/// shuffle reads are not pooled: Ballista's pool is not public.)
struct YieldingEngine(DefaultExecutionEngine);

impl ExecutionEngine for YieldingEngine {
    fn create_query_stage_exec(
        &self,
        job_id: JobId,
        stage_id: usize,
        task_id: usize,
        global_output_partition_ids: Vec<usize>,
        plan: Arc<dyn ExecutionPlan>,
        work_dir: &str,
        config: &SessionConfig,
    ) -> DFResult<Arc<dyn QueryStageExecutor>> {
        // The root is the shuffle writer, which the engine looks for.
        let children = plan
            .children()
            .into_iter()
            .map(|c| yielding(Arc::clone(c)))
            .collect::<DFResult<Vec<_>>>()?;
        let plan = with_children(plan, children)?;
        self.0.create_query_stage_exec(
            job_id,
            stage_id,
            task_id,
            global_output_partition_ids,
            plan,
            work_dir,
            config,
        )
    }
}

/// `plan` with each of its operators under a [`CooperativeExec`] (one).
fn yielding(plan: Arc<dyn ExecutionPlan>) -> DFResult<Arc<dyn ExecutionPlan>> {
    let plan = match plan.downcast_ref::<CooperativeExec>() {
        Some(c) => Arc::clone(c.input()),
        None => plan,
    };
    let children = plan
        .children()
        .into_iter()
        .map(|c| yielding(Arc::clone(c)))
        .collect::<DFResult<Vec<_>>>()?;
    Ok(Arc::new(CooperativeExec::new(with_children(
        plan, children,
    )?)))
}

/// `plan` over `children`, its properties kept (a wrapper changes none).
fn with_children(
    plan: Arc<dyn ExecutionPlan>,
    children: Vec<Arc<dyn ExecutionPlan>>,
) -> DFResult<Arc<dyn ExecutionPlan>> {
    if children.is_empty() {
        return Ok(plan);
    }
    plan.replace_children(
        children,
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
    )
}
