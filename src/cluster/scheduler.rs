//! `supportfunnel scheduler`: Ballista's scheduler with our session builder.
//!
//! It receives a client's query as a logical plan, resolves it in a session
//! built by [`super::node::node_state`] (our functions, the client's S3
//! settings, the version check), splits it into stages and hands their tasks
//! to the executors that poll it. Job state is kept in memory: a restarted
//! scheduler has forgotten its running queries, and their clients fail with
//! a line saying so.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
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
    config.validate().map_err(|e| cluster_error(&addr, e))?;
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| cluster_error(&addr, e))?;
    let scheduler =
        create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config))
            .await
            .map_err(|e| cluster_error(&addr, e))?;
    ready(addr);
    start_grpc_service_with_listener(listener, scheduler)
        .await
        .map_err(|e| cluster_error(&addr, e))
}
