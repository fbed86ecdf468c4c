//! Helpers shared by the integration tests: building small event tables in
//! memory and as Parquet files, reading query results back as strings, and
//! child processes of our binary (servers) killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    ArrayRef, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::SessionContext;
use supportfunnel::{build_context, Engine, EngineOptions};

/// One events row for tests: (event_id, user_id, ts "YYYY-MM-DD HH:MM:SS",
/// event_type, channel, conversation_id, actor, rating).
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub event_id: Option<&'static str>,
    pub user_id: Option<&'static str>,
    pub ts: Option<&'static str>,
    pub event_type: Option<&'static str>,
    pub channel: Option<&'static str>,
    pub article_id: Option<&'static str>,
    pub conversation_id: Option<&'static str>,
    pub actor: Option<&'static str>,
    pub rating: Option<i32>,
}

/// A day, `YYYY-MM-DD`.
pub fn d(s: &str) -> chrono::NaiveDate {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// The report of the local days `from` (inclusive) to `to` (exclusive).
pub fn period(from: &str, to: &str) -> supportfunnel::report::ReportOptions {
    supportfunnel::report::ReportOptions {
        from: Some(d(from)),
        to: Some(d(to)),
        ..Default::default()
    }
}

/// A valid row with the common fields set.
pub fn ev(id: &'static str, user: &'static str, ts: &'static str, ty: &'static str) -> Row {
    Row {
        event_id: Some(id),
        user_id: Some(user),
        ts: Some(ts),
        event_type: Some(ty),
        ..Row::default()
    }
}

impl Row {
    pub fn conv(mut self, c: &'static str) -> Self {
        self.conversation_id = Some(c);
        self
    }
    pub fn actor(mut self, a: &'static str) -> Self {
        self.actor = Some(a);
        self
    }
    pub fn rating(mut self, r: i32) -> Self {
        self.rating = Some(r);
        self
    }
    pub fn channel(mut self, c: &'static str) -> Self {
        self.channel = Some(c);
        self
    }
}

/// Microseconds since the epoch for "YYYY-MM-DD HH:MM:SS[.ffffff]" (UTC).
pub fn micros(ts: &str) -> i64 {
    let fmt = if ts.contains('.') {
        "%Y-%m-%d %H:%M:%S%.f"
    } else {
        "%Y-%m-%d %H:%M:%S"
    };
    chrono::NaiveDateTime::parse_from_str(ts, fmt)
        .unwrap_or_else(|e| panic!("bad test timestamp {ts}: {e}"))
        .and_utc()
        .timestamp_micros()
}

/// The events rows as a RecordBatch in the contract schema.
pub fn events_batch(rows: &[Row]) -> RecordBatch {
    let s = |f: fn(&Row) -> Option<&'static str>| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let ts: ArrayRef = Arc::new(
        TimestampMicrosecondArray::from(rows.iter().map(|r| r.ts.map(micros)).collect::<Vec<_>>())
            .with_timezone("UTC"),
    );
    let rating: ArrayRef = Arc::new(Int32Array::from(
        rows.iter().map(|r| r.rating).collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(
        supportfunnel::datagen::events_schema(),
        vec![
            s(|r| r.event_id),
            s(|r| r.user_id),
            ts,
            s(|r| r.event_type),
            s(|r| r.channel),
            s(|r| r.article_id),
            s(|r| r.conversation_id),
            s(|r| r.actor),
            rating,
        ],
    )
    .unwrap()
}

/// Writes a batch as one Parquet file, creating parent directories.
pub fn write_parquet(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// A messages file with one delivery, so the engine has both tables.
pub fn write_one_message(path: &Path) {
    let schema = supportfunnel::datagen::messages_schema();
    let ts = |v: Option<i64>| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(vec![v]).with_timezone("UTC"))
    };
    let mut tags =
        datafusion::arrow::array::ListBuilder::new(datafusion::arrow::array::StringBuilder::new());
    tags.values().append_value("outage");
    tags.append(true);
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["m1"])),
            Arc::new(StringArray::from(vec!["u1"])),
            ts(Some(micros("2026-03-02 09:00:00"))),
            Arc::new(StringArray::from(vec!["chat"])),
            Arc::new(StringArray::from(vec!["support_team"])),
            Arc::new(tags.finish()),
            ts(None),
            ts(None),
            ts(None),
        ],
    )
    .unwrap();
    write_parquet(path, &batch);
}

/// Builds the engine over `rows` written to a temp directory.
pub async fn engine_for(dir: &Path, rows: &[Row]) -> Engine {
    let events = dir.join("events").join("part-0.parquet");
    write_parquet(&events, &events_batch(rows));
    let messages = dir.join("messages").join("part-0.parquet");
    write_one_message(&messages);
    build_context(
        &EngineOptions::new(
            dir.join("events").to_string_lossy(),
            dir.join("messages").to_string_lossy(),
        )
        .unwrap(),
    )
    .await
    .unwrap()
}

/// Runs `sql` and renders every row as its columns joined by `|` (NULL as
/// "NULL"), in the query's order.
pub async fn rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let batches = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    render(&batches)
}

/// Renders batches as in [`rows`].
pub fn render(batches: &[RecordBatch]) -> Vec<String> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let fmts: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            out.push(
                fmts.iter()
                    .map(|f| f.value(i).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out
}

/// One messages row for tests.
#[derive(Clone, Debug, Default)]
pub struct MsgRow {
    pub message_id: Option<&'static str>,
    pub user_id: &'static str,
    pub sent_at: Option<&'static str>,
    pub content_type: &'static str,
    pub sender: &'static str,
    pub tags: Option<Vec<&'static str>>,
    pub opened_at: Option<&'static str>,
    pub clicked_at: Option<&'static str>,
    pub reacted_at: Option<&'static str>,
}

/// A delivery with the common fields set.
pub fn msg(
    id: &'static str,
    sent_at: &'static str,
    content_type: &'static str,
    sender: &'static str,
    tags: Option<Vec<&'static str>>,
) -> MsgRow {
    MsgRow {
        message_id: Some(id),
        user_id: "u1",
        sent_at: Some(sent_at),
        content_type,
        sender,
        tags,
        ..MsgRow::default()
    }
}

/// The messages rows as a RecordBatch in the contract schema.
pub fn messages_batch(rows: &[MsgRow]) -> RecordBatch {
    let ts = |f: fn(&MsgRow) -> Option<&'static str>| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from(
                rows.iter().map(|r| f(r).map(micros)).collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        )
    };
    let mut tags =
        datafusion::arrow::array::ListBuilder::new(datafusion::arrow::array::StringBuilder::new());
    for r in rows {
        match &r.tags {
            None => tags.append_null(),
            Some(v) => {
                for t in v {
                    tags.values().append_value(t);
                }
                tags.append(true);
            }
        }
    }
    RecordBatch::try_new(
        supportfunnel::datagen::messages_schema(),
        vec![
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.message_id).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| Some(r.user_id)).collect::<Vec<_>>(),
            )),
            ts(|r| r.sent_at),
            Arc::new(StringArray::from(
                rows.iter()
                    .map(|r| Some(r.content_type))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| Some(r.sender)).collect::<Vec<_>>(),
            )),
            Arc::new(tags.finish()),
            ts(|r| r.opened_at),
            ts(|r| r.clicked_at),
            ts(|r| r.reacted_at),
        ],
    )
    .unwrap()
}

/// Builds the engine over events and messages written to a temp directory.
pub async fn engine_with(dir: &Path, events: &[Row], messages: &[MsgRow]) -> Engine {
    write_parquet(
        &dir.join("events").join("part-0.parquet"),
        &events_batch(events),
    );
    write_parquet(
        &dir.join("messages").join("part-0.parquet"),
        &messages_batch(messages),
    );
    build_context(
        &EngineOptions::new(
            dir.join("events").to_string_lossy(),
            dir.join("messages").to_string_lossy(),
        )
        .unwrap(),
    )
    .await
    .unwrap()
}

/// The `supportfunnel` binary, run from the crate root (where the bundled
/// sample is).
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_supportfunnel"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// Runs the binary with `args` to the end.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Rebuilds the events batch with `ts` in another unit / zone.
pub fn with_ts(batch: &RecordBatch, ts: ArrayRef) -> RecordBatch {
    with_column(batch, "ts", ts)
}

/// Rebuilds `batch` with column `name` replaced by `values` (any type).
pub fn with_column(batch: &RecordBatch, name: &str, values: ArrayRef) -> RecordBatch {
    let at = batch.schema().index_of(name).unwrap();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[at] = Field::new(name, values.data_type().clone(), true);
    let mut cols = batch.columns().to_vec();
    cols[at] = values;
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

/// A table of the bundled sample, as a path string.
pub fn sample(table: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/sample")
        .join(table)
        .to_string_lossy()
        .into_owned()
}

/// Engine options over the bundled sample.
pub fn sample_options() -> EngineOptions {
    EngineOptions::new(sample("events"), sample("messages")).unwrap()
}

/// A child process whose stderr is collected; killed on drop.
pub struct Node {
    pub name: String,
    pub child: Child,
    pub log: Arc<Mutex<String>>,
    /// Set when the child's stderr has been read to its end.
    pub log_done: Arc<AtomicBool>,
    pub work_dir: Option<PathBuf>,
}

impl Node {
    /// Starts `supportfunnel <args>` in `cwd`, collecting stderr; `on_line`
    /// sees each line as it comes.
    pub fn start(name: &str, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_supportfunnel"));
        command
            .args(args)
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to
        // kill this child when the thread that started it ends.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("node starts");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let log_done = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&log_done);
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
            done.store(true, Ordering::Release);
        });
        Self {
            name: name.to_string(),
            child,
            log,
            log_done,
            work_dir: None,
        }
    }

    /// Waits until `addr` takes connections while the node still runs (an
    /// `Err` naming its exit and log otherwise, as
    /// [`Node::try_wait_for_line`]).
    pub fn try_wait_listening(&mut self, addr: &str, within: Duration) -> Result<(), String> {
        let start = Instant::now();
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        loop {
            let up =
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
            // an executor whose port another process holds exits at once
            std::thread::sleep(Duration::from_millis(50));
            if let Some(exited) = self.exited(&format!("listening on {addr}")) {
                return Err(exited);
            }
            if up {
                return Ok(());
            }
            assert!(
                start.elapsed() < within,
                "{}: not listening on {addr} within {within:?}:\n{}",
                self.name,
                self.log()
            );
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log has a line containing `text`, and returns it.
    pub fn wait_for_line(&mut self, text: &str, within: Duration) -> String {
        self.try_wait_for_line(text, within)
            .unwrap_or_else(|exited| panic!("{exited}"))
    }

    /// [`Node::wait_for_line`], but a node that exits first is an `Err`
    /// naming its status and log, for a caller that can start it again.
    pub fn try_wait_for_line(&mut self, text: &str, within: Duration) -> Result<String, String> {
        let start = Instant::now();
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(text)) {
                return Ok(line.to_string());
            }
            if let Some(exited) = self.exited(&format!("`{text}`")) {
                return Err(exited);
            }
            assert!(
                start.elapsed() < within,
                "{}: no `{text}` within {within:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// If the node has exited: its status and whole log, said as having
    /// happened before `what`.
    fn exited(&mut self, what: &str) -> Option<String> {
        let status = self.child.try_wait().ok()??;
        // its last lines (the reason it exited) may still be on their way
        // to the log
        let waited = Instant::now();
        while !self.log_done.load(Ordering::Acquire) && waited.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(format!(
            "{} exited ({status}) before {what}:\n{}",
            self.name,
            self.log()
        ))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port on 127.0.0.1 that was free when asked, for a child process
/// to listen on.
///
/// Not one the OS picked (`bind` to port 0): those come from the ephemeral
/// range, where any outgoing connection of the tests running beside this
/// one (an executor to its scheduler, a client to a server) may take it
/// before the child binds it. These come from the 12,000 ports below that
/// range (`ip_local_port_range`), each at most once per test process,
/// starting at a place of this process's own. On a host whose ephemeral
/// range leaves no room below it, the OS picks.
pub fn free_port() -> u16 {
    static RANGE: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let range = *RANGE.get_or_init(|| {
        let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or(32_768);
        let low = ephemeral_low.saturating_sub(12_000).max(1_024);
        NEXT.store(std::process::id(), Ordering::Relaxed);
        (ephemeral_low > low + 1_000).then_some((low, ephemeral_low - low))
    });
    if let Some((low, span)) = range {
        for _ in 0..span {
            let port = (low + NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every file under `dir` (its path relative to `dir`, and its bytes), sorted.
pub fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Copies directory `from` to `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// How a report's derived relations are computed in a test: every report
/// rule is checked each way, and the ways must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The operators, in memory.
    Operators,
    /// The operators, every segment spilled to disk.
    Spilled,
    /// The SQL reference views, step by step (what a cluster runs).
    Views,
}

impl Via {
    /// Every way.
    pub const ALL: [Via; 3] = [Via::Operators, Via::Spilled, Via::Views];

    /// `engine`, computing this way.
    pub fn engine(self, engine: &Engine) -> Engine {
        let mut options = engine.options.clone();
        options.sql_views = self == Via::Views;
        let config = engine
            .ctx
            .copied_config()
            .with_create_default_catalog_and_schema(false)
            .with_extension(Arc::new(supportfunnel::tables::native::NativeOptions {
                always_spill: self == Via::Spilled,
                ..Default::default()
            }));
        let state =
            datafusion::execution::SessionStateBuilder::new_from_existing(engine.ctx.state())
                .with_config(config)
                .build();
        Engine {
            ctx: SessionContext::new_with_state(state),
            tables: engine.tables.clone(),
            options,
        }
    }
}
