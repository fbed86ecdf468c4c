//! The S3-compatible server of the tests, inside the test process: s3s-fs's
//! file system backend served by s3s over hyper on 127.0.0.1 (a free port),
//! with real signature checks, on a thread and runtime of its own. Nothing
//! needs installing; dropping the server stops it.
//!
//! Between hyper and s3s sits a fault layer: a test adds [`Rule`]s, and the
//! matching requests are delayed, answered `503 SlowDown`, get their
//! response body cut off half-way (the connection dies mid-GET), or lose
//! their connection after half of an upload.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use object_store::ObjectStoreExt;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use supportfunnel::io::storage::s3_builder;
use supportfunnel::settings::config::S3Config;

pub const ACCESS_KEY: &str = "sf-test-access";
pub const SECRET_KEY: &str = "sf-test-secret-0123456789";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What happens to a request a [`Rule`] matches.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Answer `503 SlowDown` (S3's "reduce your request rate").
    SlowDown,
    /// Send the headers and half the body, then break the connection.
    CutBody,
    /// Read half of the request body, then break the connection.
    CutUpload,
}

/// Which requests get a fault, and how many of them.
#[derive(Debug, Clone)]
pub struct Rule {
    /// HTTP method, e.g. "GET".
    pub method: &'static str,
    /// A substring of the request path (`/bucket/key`).
    pub path_contains: String,
    pub fault: Fault,
    /// How many matching requests get the fault (then the rule is spent).
    pub times: usize,
}

/// The rules in force, and how many faults were injected.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
    injected: AtomicUsize,
}

impl Faults {
    pub fn add(&self, rule: Rule) {
        self.rules.lock().unwrap().push(rule);
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }

    /// Faults injected so far.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }

    fn take(&self, method: &str, path: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        let rule = rules
            .iter_mut()
            .find(|r| r.times > 0 && r.method == method && path.contains(&r.path_contains))?;
        rule.times -= 1;
        self.injected.fetch_add(1, Ordering::SeqCst);
        Some(rule.fault)
    }
}

/// A running server over a temporary root; stopped on drop.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    /// The fault layer in front of it.
    pub faults: Arc<Faults>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The directory it serves: `<root>/<bucket>/<key>`.
    _root: tempfile::TempDir,
}

impl S3Server {
    /// Starts a server with the given (empty) buckets.
    pub fn start(buckets: &[&str]) -> Self {
        let root = tempfile::tempdir().unwrap();
        for b in buckets {
            std::fs::create_dir_all(root.path().join(b)).unwrap();
        }
        // Bound here, so the port is taken before anyone else can take it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Faults::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let serve_root = root.path().to_path_buf();
        let serve_faults = Arc::clone(&faults);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(listener, serve_root, serve_faults, stopped));
            // Connections still open (a client keeping them alive) end with
            // the runtime.
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            faults,
            stop: Some(stop),
            thread: Some(thread),
            _root: root,
        }
    }

    /// Settings that reach this server with the right (or given) secret.
    pub fn settings(&self, secret: &str) -> S3Config {
        S3Config {
            region: Some("us-east-1".into()),
            endpoint: Some(self.endpoint.clone()),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(secret.into()),
            session_token: None,
            allow_http: Some(true),
            virtual_hosted_style: Some(false),
            ..S3Config::default()
        }
    }

    /// Uploads a local directory tree to `s3://bucket/prefix/` through the S3
    /// API (signed PUTs), not by copying into the server's directory.
    pub async fn upload(&self, local: &Path, bucket: &str, prefix: &str) {
        let store = s3_builder(&self.settings(SECRET_KEY))
            .unwrap()
            .with_bucket_name(bucket)
            .build()
            .unwrap();
        let mut stack = vec![local.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let rel = path
                    .strip_prefix(local)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let key = object_store::path::Path::from(format!("{prefix}/{rel}"));
                let bytes = std::fs::read(&path).unwrap();
                store.put(&key, bytes.into()).await.unwrap();
            }
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    root: PathBuf,
    faults: Arc<Faults>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let s3 = builder.build();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => continue,
            },
            _ = &mut stopped => break,
        };
        let (s3, faults) = (s3.clone(), Arc::clone(&faults));
        let service =
            hyper::service::service_fn(move |req| handle(s3.clone(), Arc::clone(&faults), req));
        let conn = http
            .serve_connection(TokioIo::new(socket), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

static CONDITIONAL_PUTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";

async fn handle(
    s3: S3Service,
    faults: Arc<Faults>,
    req: Request<Incoming>,
) -> Result<Response<s3s::Body>, BoxError> {
    let fault = faults.take(req.method().as_str(), req.uri().path());
    // S3 checks `If-None-Match: *` and stores the object as one step; s3s-fs
    // checks, then streams the body and renames it into place, so two such
    // PUTs of one key at once could both succeed. One at a time here, as S3
    // guarantees (Delta commits rely on it).
    let _exclusive =
        if req.method() == hyper::Method::PUT && req.headers().contains_key("if-none-match") {
            Some(CONDITIONAL_PUTS.lock().await)
        } else {
            None
        };
    let call = |req: Request<Incoming>| async move {
        s3.call(req.map(s3s::Body::from))
            .await
            .map_err(|e| BoxError::from(format!("{e:?}")))
    };
    match fault {
        None => call(req).await,
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            call(req).await
        }
        Some(Fault::SlowDown) => Ok(Response::builder()
            .status(503)
            .header("content-type", "application/xml")
            .body(s3s::Body::from(SLOW_DOWN.to_string()))?),
        Some(Fault::CutBody) => {
            let (parts, body) = call(req).await?.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let half = bytes.slice(..bytes.len() / 2);
            let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
                Ok(Frame::data(half)),
                Err(std::io::Error::other("injected: connection cut mid-body")),
            ];
            let cut = http_body_util::StreamBody::new(futures::stream::iter(frames));
            Ok(Response::from_parts(parts, s3s::Body::http_body(cut)))
        }
        Some(Fault::CutUpload) => {
            let expected: usize = req
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0);
            let mut body = req.into_body();
            let mut read = 0;
            while read < expected / 2 {
                match body.frame().await {
                    Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len()),
                    _ => break,
                }
            }
            Err("injected: connection lost half-way through an upload".into())
        }
    }
}
