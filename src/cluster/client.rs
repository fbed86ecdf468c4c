//! A session whose queries run on a cluster (`--cluster df://HOST:PORT`).
//!
//! [`attach`] turns a context built as usual (tables registered and checked
//! on the client, views, functions) into one whose physical planner sends
//! each query to the scheduler as a logical plan, with the session's
//! settings and ours ([`super::node::NodeOptions`]); results come back as
//! Arrow batches from the executors. DDL (views, `SET`) stays on the client.
//!
//! What a plan may contain is what Ballista's codecs and ours
//! ([`super::codec`]) serialize: Parquet listing tables, views, our
//! functions (resolved by name on every node) and the native operators.

use std::sync::Arc;
use std::time::Duration;

use ballista_core::config::{BALLISTA_ADAPTIVE_PLANNER_ENABLED, BALLISTA_CLIENT_PULL};
use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use object_store::aws::AmazonS3ConfigKey;
use object_store::ClientConfigKey;

use super::node::NodeOptions;
use super::ClusterUrl;
use crate::error::{Error, Result};
use crate::settings::config::S3Config;
use crate::settings::options::TableSource;

/// How long the client waits to open a connection to the scheduler before
/// saying it cannot be reached.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The client's S3 settings as every node must use them: the config's
/// `[storage.s3]` over the client's `AWS_*` environment, resolved here, so
/// that executors read with the client's credentials whatever their own
/// environment holds (a node's own environment still fills what the client
/// leaves unset, such as an instance role).
pub fn resolved_s3(settings: &S3Config) -> Result<S3Config> {
    let b = crate::io::storage::s3_builder(settings)?;
    let get = |key: AmazonS3ConfigKey| b.get_config_value(&key);
    let flag = |key: AmazonS3ConfigKey| get(key).and_then(|v| v.parse::<bool>().ok());
    Ok(S3Config {
        region: get(AmazonS3ConfigKey::Region),
        endpoint: get(AmazonS3ConfigKey::Endpoint),
        access_key_id: get(AmazonS3ConfigKey::AccessKeyId),
        secret_access_key: get(AmazonS3ConfigKey::SecretAccessKey),
        session_token: get(AmazonS3ConfigKey::Token),
        allow_http: flag(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)),
        virtual_hosted_style: flag(AmazonS3ConfigKey::VirtualHostedStyleRequest),
        ..settings.clone()
    })
}

/// Checks that something listens at the scheduler's address, within
/// [`CONNECT_TIMEOUT`]: Ballista's client would otherwise retry for much
/// longer before the first query fails.
pub async fn check_reachable(url: &ClusterUrl) -> Result<()> {
    let unreachable = |why: String| Error::Cluster {
        cluster: url.to_string(),
        problem: format!(
            "cannot reach the scheduler at {}: {why} (is `supportfunnel scheduler` running \
             there, and the port open?)",
            url.authority()
        ),
    };
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(url.authority()),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!(
            "no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// `ctx` with its queries planned and run by the cluster at `url`, carrying
/// this client's version and S3 settings (`s3`, resolved by
/// [`resolved_s3`]). Tables and views registered on `ctx` stay.
pub async fn attach(
    ctx: &SessionContext,
    url: &ClusterUrl,
    s3: &S3Config,
) -> Result<SessionContext> {
    check_reachable(url).await?;
    let options = NodeOptions {
        version: super::node_version(),
        s3: resolved_s3(s3)?,
        client: client_session(),
    };
    let state = ctx.state();
    // Ballista's upgrade adds its settings to the session's and switches
    // off, for every query, what it cannot distribute (DataFusion's physical
    // scalar subqueries and dynamic filters, hash-join-first planning). Its
    // adaptive planner is switched off too: when an executor holding a
    // finished stage's output is lost, it re-runs the stage but cannot
    // record the new output, and the job never ends (Ballista 55,
    // docs/CLUSTER.md); the static planner re-runs it correctly. The client
    // asks for its job's status (pull) rather than waiting for pushed
    // statuses: it then knows the job's id from the moment the job is
    // accepted, so it can cancel it at any time (pushed, the id comes only
    // with the first status, after a stage has finished), and a scheduler
    // gone fails its next request. HTTP/2 pings notice a silent one.
    let config = state
        .config()
        .clone()
        .with_option_extension(options)
        .with_ballista_logical_extension_codec(Arc::new(super::codec::LogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(super::codec::PhysicalCodec::default()))
        .upgrade_for_ballista()
        .set_bool(BALLISTA_ADAPTIVE_PLANNER_ENABLED, false)
        .set_bool(BALLISTA_CLIENT_PULL, true)
        .set_u64("ballista.client.grpc_http2_keepalive_interval_seconds", 15);
    let state = SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .build()
        .upgrade_for_ballista(url.endpoint())?;
    let planner =
        super::jobs::ClusterPlanner::new(Arc::clone(state.query_planner()), url.endpoint());
    let state = SessionStateBuilder::new_from_existing(state)
        .with_query_planner(Arc::new(planner))
        .build();
    let remote = SessionContext::new_with_state(state);
    // Ballista's upgrade puts its own function lists in place of ours.
    crate::functions::register_functions(&remote);
    Ok(remote)
}

/// A name for one attached context, unique across clients and time: the
/// process, the time and a counter.
fn client_session() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Whether the connection to the scheduler was lost, by the error's types:
/// a gRPC status `Unavailable`, a transport error, or Ballista's own
/// connection error, anywhere in the chain of causes.
fn connection_lost(e: &Error) -> bool {
    use ballista_core::error::BallistaError;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let lost = c.downcast_ref::<tonic::transport::Error>().is_some()
            || c.downcast_ref::<tonic::Status>()
                .is_some_and(|s| s.code() == tonic::Code::Unavailable)
            || matches!(
                c.downcast_ref::<BallistaError>(),
                Some(BallistaError::TonicError(_) | BallistaError::GrpcConnectionError(_))
            )
            || matches!(
                c.downcast_ref::<BallistaError>(),
                Some(BallistaError::GrpcError(s)) if s.code() == tonic::Code::Unavailable
            );
        if lost {
            return true;
        }
        cause = c.source();
    }
    false
}

/// An error from a query on the cluster, said in one line naming the
/// cluster (and, when a node could not read data, the tables' locations,
/// which Ballista's message leaves out); errors that are not the cluster's
/// (a bad argument, a table that does not match the contract) are returned
/// as they are.
pub fn explain(url: &ClusterUrl, tables: &[TableSource], e: Error) -> Error {
    let text = match &e {
        Error::Query(q) => q.to_string(),
        _ => return e,
    };
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let cancelled = text
        .split("Job ")
        .nth(1)
        .and_then(|r| r.split_once(" failed: Cancelled"))
        .map(|(job, _)| job.to_string());
    let problem = if let Some(i) = text.find("version mismatch") {
        text[i..].to_string()
    } else if text.contains("not supportfunnel") {
        text
    } else if let Some(job) = cancelled {
        format!(
            "the cluster stopped job {job}: no task of it could run any more (an executor \
             was lost and its work could not be redone; the scheduler's log says more); run \
             the query again"
        )
    } else if text.contains("no longer knows job") {
        text
    } else if connection_lost(&e)
        // Ballista's client reports most failures as formatted text
        // (`DistributedQueryExec` turns the scheduler's status into a
        // string), so what `connection_lost` cannot see by type is
        // recognised by Ballista's own wording, which the cluster tests
        // (a stopped scheduler) pin.
        || text.contains("transport error")
        || text.contains("Connection refused")
        || text.contains("Could not connect")
        || text.contains("h2 protocol error")
        || text.contains("Stream closed without job completing")
        || text.contains("code: 'Unavailable'")
        || text.contains("Status { code: Unavailable")
        // A request cut off when the scheduler went: its status is
        // `Cancelled`, its cause the transport.
        || (text.contains("code: Cancelled") && text.contains("transport::Error"))
    {
        format!(
            "lost the connection to the scheduler at {}: the query's results are lost, run it \
             again when the scheduler is back ({text})",
            url.authority()
        )
    } else if text.contains("no executors") || text.contains("No executors") {
        format!("every executor was lost and none came back: {text}")
    } else if [
        "Parquet error",
        "ParquetError",
        "Object at location",
        "No such file",
        "Generic S3",
        "NotFound",
    ]
    .iter()
    .any(|t| text.contains(t))
    {
        let places: Vec<String> = tables
            .iter()
            .map(|t| format!("{} at {}", t.name, t.location))
            .collect();
        format!(
            "{text} (a node could not read its input; every executor must read the tables: {})",
            places.join(", ")
        )
    } else {
        text
    };
    Error::Cluster {
        cluster: url.to_string(),
        problem,
    }
}

/// Refuses, on a cluster, a statement Ballista 55 may answer wrongly: a
/// scalar subquery (`SELECT (SELECT count(*) FROM t)`, `WHERE x > (SELECT
/// …)`). DataFusion rewrites it into an outer join whose preserved side is
/// the one every task holds, so each task adds its own copy of the
/// unmatched rows (seen: four rows where one was right). Exactness first:
/// the statement fails with the rewrite that runs correctly. Statements on
/// a context that is not on a cluster pass.
pub fn check_plan(
    ctx: &SessionContext,
    plan: &datafusion::logical_expr::LogicalPlan,
) -> Result<()> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Expr;
    if ctx
        .state()
        .config()
        .options()
        .extensions
        .get::<NodeOptions>()
        .is_none()
    {
        return Ok(());
    }
    let mut found = false;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                found |= matches!(e, Expr::ScalarSubquery(_));
                Ok(if found {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            })
        })?;
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    if found {
        return Err(Error::usage(
            "scalar subqueries are not run on a cluster: Ballista 55 can return extra rows for \
             them (docs/CLUSTER.md); compute the value in a CTE of one row and CROSS JOIN it, \
             or run the statement without --cluster",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How Ballista's client says a lost scheduler, as seen in the cluster
    /// tests: each is said as a lost connection naming the scheduler.
    #[test]
    fn a_lost_scheduler_is_said_whatever_the_status() {
        let url = ClusterUrl::parse("df://127.0.0.1:42329").unwrap();
        for text in [
            "Status { code: Cancelled, message: \"operation was canceled\", source: \
             Some(tonic::transport::Error(Transport, hyper::Error(Canceled, \"connection \
             closed\"))) }",
            "Status { code: Unavailable, message: \"error trying to connect\" }",
            "transport error",
        ] {
            let e = Error::Query(datafusion::error::DataFusionError::Execution(text.into()));
            let said = explain(&url, &[], e).to_string();
            assert!(
                said.contains("lost the connection to the scheduler at 127.0.0.1:42329"),
                "{said}"
            );
        }
        // A cancel of our own is not a lost scheduler.
        let e = Error::Query(datafusion::error::DataFusionError::Execution(
            "Status { code: Cancelled, message: \"Timeout expired\" }".into(),
        ));
        assert!(!explain(&url, &[], e)
            .to_string()
            .contains("lost the connection"));
    }
}
