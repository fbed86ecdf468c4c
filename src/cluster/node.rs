//! What every node of a cluster builds its DataFusion state from.
//!
//! A client sends each query with its session settings (DataFusion's
//! `key = value` configuration, extensions included). Ours travel as the
//! `supportfunnel.*` extension, [`NodeOptions`]: the client's version and
//! its S3 settings (the `[storage.s3]` table over the client's `AWS_*`
//! environment, resolved on the client). A node then builds:
//!
//! * on the scheduler, per query ([`node_state`]): the session the plan is
//!   resolved and split into stages in, with our functions and object
//!   stores (planning lists the tables' files);
//! * on an executor, per session ([`node_runtime`]): the runtime tasks run
//!   in, whose object stores read and write with the client's S3 settings;
//!   and once ([`function_registry`]): the functions a task's plan may name.
//!
//! A node refuses a query from a client of another version with one line
//! naming both: a plan names functions and carries SQL semantics of the
//! version that planned it.
//!
//! Secrets: the S3 settings are sent to the scheduler and executors in the
//! query's settings (over the cluster's gRPC connections: run the cluster
//! on a private network, docs/CLUSTER.md). They are never printed by us:
//! [`NodeOptions`]'s `Debug` redacts them, and plans carry table URLs, not
//! settings.

use std::any::Any;
use std::sync::Arc;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::prelude::SessionConfig;
use object_store::ObjectStore;
use url::Url;

use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::utils::default_config_producer;

use crate::functions::{id_hash, session_start};
use crate::settings::config::S3Config;

/// The `supportfunnel.*` settings a client sends with every query.
#[derive(Default, Clone, PartialEq)]
pub struct NodeOptions {
    /// The client's [`super::node_version`]; empty when the query did not
    /// come from supportfunnel.
    pub version: String,
    /// The client's S3 settings, resolved (see the module documentation).
    pub s3: S3Config,
    /// The client session the query belongs to (unique per attached
    /// context): an executor keeps one build of the operators for the jobs
    /// of one client session, as one process does for its statements.
    pub client: String,
}

impl std::fmt::Debug for NodeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeOptions")
            .field("version", &self.version)
            .field("s3", &self.s3)
            .field("client", &self.client)
            .finish()
    }
}

impl ConfigExtension for NodeOptions {
    const PREFIX: &'static str = "supportfunnel";
}

/// The keys, without the prefix, in the order [`NodeOptions::entries`]
/// lists them.
const KEYS: &[(&str, &str)] = &[
    ("version", "supportfunnel version of the client"),
    ("client", "client session the query belongs to"),
    ("s3.region", "S3 region"),
    ("s3.endpoint", "S3 endpoint URL"),
    ("s3.access_key_id", "S3 access key id"),
    ("s3.secret_access_key", "S3 secret access key"),
    ("s3.session_token", "S3 session token"),
    ("s3.allow_http", "allow plain HTTP to the S3 endpoint"),
    (
        "s3.virtual_hosted_style",
        "virtual-hosted-style S3 requests",
    ),
    ("s3.max_retries", "retries of a failed S3 request"),
    (
        "s3.retry_timeout",
        "stop retrying an S3 request after this long",
    ),
    ("s3.timeout", "time one S3 request may take"),
    ("s3.connect_timeout", "time to open a connection to S3"),
];

impl NodeOptions {
    fn get(&self, key: &str) -> Option<String> {
        let s3 = &self.s3;
        match key {
            "version" => Some(self.version.clone()).filter(|v| !v.is_empty()),
            "client" => Some(self.client.clone()).filter(|v| !v.is_empty()),
            "s3.region" => s3.region.clone(),
            "s3.endpoint" => s3.endpoint.clone(),
            "s3.access_key_id" => s3.access_key_id.clone(),
            "s3.secret_access_key" => s3.secret_access_key.clone(),
            "s3.session_token" => s3.session_token.clone(),
            "s3.allow_http" => s3.allow_http.map(|b| b.to_string()),
            "s3.virtual_hosted_style" => s3.virtual_hosted_style.map(|b| b.to_string()),
            "s3.max_retries" => s3.max_retries.map(|n| n.to_string()),
            "s3.retry_timeout" => s3.retry_timeout.clone(),
            "s3.timeout" => s3.timeout.clone(),
            "s3.connect_timeout" => s3.connect_timeout.clone(),
            _ => None,
        }
    }
}

impl ExtensionOptions for NodeOptions {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> DFResult<()> {
        let text = Some(value.to_string());
        let flag = || {
            value.parse::<bool>().map(Some).map_err(|_| {
                DataFusionError::Configuration(format!(
                    "supportfunnel.{key}: `{value}` is not true or false"
                ))
            })
        };
        let s3 = &mut self.s3;
        match key {
            "version" => self.version = value.to_string(),
            "client" => self.client = value.to_string(),
            "s3.region" => s3.region = text,
            "s3.endpoint" => s3.endpoint = text,
            "s3.access_key_id" => s3.access_key_id = text,
            "s3.secret_access_key" => s3.secret_access_key = text,
            "s3.session_token" => s3.session_token = text,
            "s3.allow_http" => s3.allow_http = flag()?,
            "s3.virtual_hosted_style" => s3.virtual_hosted_style = flag()?,
            "s3.max_retries" => {
                s3.max_retries = Some(value.parse().map_err(|_| {
                    DataFusionError::Configuration(format!(
                        "supportfunnel.s3.max_retries: `{value}` is not a count"
                    ))
                })?)
            }
            "s3.retry_timeout" => s3.retry_timeout = text,
            "s3.timeout" => s3.timeout = text,
            "s3.connect_timeout" => s3.connect_timeout = text,
            _ => {
                return Err(DataFusionError::Configuration(format!(
                    "unknown setting supportfunnel.{key}"
                )))
            }
        }
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        KEYS.iter()
            .map(|(key, description)| ConfigEntry {
                key: format!("{}.{key}", Self::PREFIX),
                value: self.get(key),
                description,
            })
            .collect()
    }
}

/// A node's base configuration: Ballista's, with our extension registered
/// so the `supportfunnel.*` settings of a query are understood.
pub fn node_config() -> SessionConfig {
    default_config_producer().with_option_extension(NodeOptions::default())
}

/// The settings a query carries, when it came from supportfunnel.
fn options_of(config: &SessionConfig) -> NodeOptions {
    config
        .options()
        .extensions
        .get::<NodeOptions>()
        .cloned()
        .unwrap_or_default()
}

/// Refuses a query from a client of another version (or from a client that
/// is not supportfunnel), naming both versions.
pub fn check_version(config: &SessionConfig) -> DFResult<NodeOptions> {
    let options = options_of(config);
    let ours = super::node_version();
    if options.version.is_empty() {
        return Err(DataFusionError::Configuration(format!(
            "this cluster runs supportfunnel {ours}; the query came from a client that is not \
             supportfunnel (no supportfunnel.version setting): use `supportfunnel sql --cluster`"
        )));
    }
    if options.version != ours {
        return Err(DataFusionError::Configuration(format!(
            "version mismatch: the cluster runs supportfunnel {ours}, the client is {}; \
             run the same version on the client, the scheduler and every executor",
            options.version
        )));
    }
    Ok(options)
}

/// Object stores of one session on a node: `s3://bucket` stores built on
/// first use from the client's S3 settings (then kept, registered under the
/// bucket), local files as usual.
#[derive(Debug)]
pub struct NodeStores {
    s3: S3Config,
    inner: DefaultObjectStoreRegistry,
}

impl NodeStores {
    /// Stores that use `s3` for S3 buckets.
    pub fn new(s3: S3Config) -> Self {
        Self {
            s3,
            inner: DefaultObjectStoreRegistry::new(),
        }
    }
}

impl ObjectStoreRegistry for NodeStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.inner.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> DFResult<Arc<dyn ObjectStore>> {
        self.inner.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> DFResult<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.inner.get_store(url) {
            return Ok(store);
        }
        if !matches!(url.scheme(), "s3" | "s3a") {
            return self.inner.get_store(url);
        }
        let bucket = url.host_str().unwrap_or_default();
        let base = Url::parse(&format!("{}://{bucket}", url.scheme()))
            .map_err(|e| DataFusionError::Configuration(format!("{url}: {e}")))?;
        let store: Arc<dyn ObjectStore> = Arc::new(
            crate::io::storage::s3_builder(&self.s3)
                .map_err(|e| DataFusionError::Configuration(e.to_string()))?
                .with_bucket_name(bucket)
                .build()?,
        );
        self.inner.register_store(&base, Arc::clone(&store));
        Ok(store)
    }
}

/// The runtime a node runs a session's work in: object stores from the
/// query's S3 settings, spill files in `spill_dir`.
pub fn node_runtime(config: &SessionConfig, spill_dir: Option<&str>) -> DFResult<Arc<RuntimeEnv>> {
    let options = check_version(config)?;
    let mut runtime =
        RuntimeEnvBuilder::new().with_object_store_registry(Arc::new(NodeStores::new(options.s3)));
    if let Some(dir) = spill_dir {
        runtime = runtime.with_temp_file_path(dir);
    }
    runtime.build_arc()
}

/// The scheduler's session for a query: the client's settings, our
/// functions, object stores for planning, and the operators' planner (the
/// client's plan names our relations; the scheduler plans them as the
/// operators the executors run).
pub fn node_state(config: SessionConfig) -> DFResult<SessionState> {
    let runtime = node_runtime(&config, None)?;
    let options = crate::tables::native::NativeOptions {
        single_task: true,
        ..config
            .get_extension::<crate::tables::native::NativeOptions>()
            .map(|o| o.as_ref().clone())
            .unwrap_or_default()
    };
    let config = config.with_extension(Arc::new(options));
    Ok(with_functions(
        SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_query_planner(Arc::new(crate::tables::native::node::NativeQueryPlanner))
            .with_optimizer_rule(Arc::new(crate::tables::native::node::NativePushdown)),
    )
    .build())
}

/// Adds our functions to a state being built.
fn with_functions(mut builder: SessionStateBuilder) -> SessionStateBuilder {
    builder
        .scalar_functions()
        .get_or_insert_default()
        .push(Arc::new(id_hash::id_hash_udf()));
    builder
        .window_functions()
        .get_or_insert_default()
        .push(Arc::new(session_start::session_start_udwf()));
    builder
}

/// The functions an executor resolves plans with: DataFusion's and ours.
pub fn function_registry() -> BallistaFunctionRegistry {
    let state = with_functions(
        SessionStateBuilder::new()
            .with_default_features()
            .with_config(node_config()),
    )
    .build();
    BallistaFunctionRegistry::from(&state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_travel_as_key_values_and_secrets_stay_out_of_debug() {
        let mut sent = NodeOptions {
            version: "1.2.3".into(),
            client: "4242-1-0".into(),
            ..NodeOptions::default()
        };
        sent.s3.endpoint = Some("http://127.0.0.1:9000".into());
        sent.s3.secret_access_key = Some("s3cr3t".into());
        sent.s3.allow_http = Some(true);
        sent.s3.max_retries = Some(0);
        let config = SessionConfig::new().with_option_extension(sent.clone());
        // what Ballista sends: every entry as key = value
        let pairs: Vec<(String, String)> = config
            .options()
            .entries()
            .into_iter()
            .filter(|e| e.key.starts_with("supportfunnel."))
            .filter_map(|e| e.value.map(|v| (e.key, v)))
            .collect();
        let mut received = node_config();
        for (k, v) in &pairs {
            received.options_mut().set(k, v).unwrap();
        }
        assert_eq!(options_of(&received), sent);
        assert!(!format!("{sent:?}").contains("s3cr3t"));
        assert!(received
            .options_mut()
            .set("supportfunnel.nope", "1")
            .is_err());
        assert!(received
            .options_mut()
            .set("supportfunnel.s3.allow_http", "maybe")
            .is_err());
    }

    #[test]
    fn nodes_refuse_other_versions_and_other_clients() {
        let e = check_version(&node_config()).unwrap_err().to_string();
        assert!(e.contains("not supportfunnel"), "{e}");
        let other = node_config().with_option_extension(NodeOptions {
            version: "0.0.0-other".into(),
            ..NodeOptions::default()
        });
        let e = check_version(&other).unwrap_err().to_string();
        assert!(
            e.contains("0.0.0-other") && e.contains("version mismatch"),
            "{e}"
        );
        let same = node_config().with_option_extension(NodeOptions {
            version: super::super::node_version(),
            ..NodeOptions::default()
        });
        assert!(node_state(same).is_ok());
    }
}
