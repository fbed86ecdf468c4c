//! The fold of a full run in one pass over `events`, when the operators'
//! build is at hand.
//!
//! The reference fold (`winners`, `event_index`, `kept_ids`, `live_events`
//! in `queries/incremental/fold.sql`) writes the surviving copy of every id
//! and reads the history three more times. A full run has no earlier state,
//! and the build already knows which conversations started (the
//! `conversations` relation) and which ids may have copies (the repeated
//! id hashes). So one statement (`fold_places`) reads every valid row once
//! and says where it goes: its id into the index, the row into the live
//! events, or, for the few ids that may have copies, into a small
//! temporary table that `repeated_places` ranks afterwards. The message
//! index and the live messages of a full run come from one aggregation
//! of the deliveries and one read of those not sent before the frontier
//! ([`messages`]).
//! This module only routes the rows to their files; the rules stay in
//! SQL, and `incremental::the_one_pass_fold_writes_the_reference_state`
//! holds the state it writes equal to the reference fold's.
//!
//! Faster still, a full run hands the operators' scan a tap
//! ([`ScanFold`], [`crate::tables::native::tap`]) before its reports: the
//! scan, which reads every row once for the reports anyway, routes the
//! rows the same way as it reads them, and the pass is left only the rows
//! the scan could not decide (lifecycle rows whose start it had not seen,
//! the ids that may have copies). When the tap could not follow, the pass
//! reads the history as above.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{
    and, cast, filter, filter_record_batch, not, prep_null_mask_filter,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::config::TableParquetOptions;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::parquet::arrow::async_writer::AsyncArrowWriter;
use datafusion::parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;
use object_store::buffered::BufWriter;

use super::sql::statement;
use super::{data_name, StateStore, REPEATED_ID_FN};
use crate::engine::query::Params;
use crate::error::{Error, Result};
use crate::tables::native::dedup::{each_str, str_test};
use crate::tables::native::intern::Interner;
use crate::tables::native::node::NativeCache;
use crate::tables::native::tap::{FoldTap, Senders, LIVE_COLUMNS};

/// The files the pass wrote and what it counted.
pub(super) struct Placed {
    /// The event index segment.
    pub index: String,
    /// The live events.
    pub live: String,
    /// Valid rows of folded ids, less one per folded id.
    pub folded_duplicates: u64,
    /// The scan routed the rows (else the pass read the events).
    pub from_scan: bool,
}

/// A full run's fold routed by the operators' scan: the tap handed to the
/// next build, and the tasks writing the index and the live events as the
/// scan sends them. Dropped unused, its writers stop and no file appears.
pub(super) struct ScanFold {
    tap: Arc<FoldTap>,
    /// The generation its files belong to (the state's next).
    pub generation: u64,
    index: (String, Option<Writer>),
    live: (String, Option<Writer>),
}

type Writer = tokio::task::JoinHandle<Result<Sink>>;

impl Drop for ScanFold {
    fn drop(&mut self) {
        self.tap.close();
        for w in [self.index.1.take(), self.live.1.take()]
            .into_iter()
            .flatten()
        {
            w.abort();
        }
    }
}

impl ScanFold {
    /// Hands a tap to the next build of `ctx` (which must have the
    /// operators' cache), writing files of generation `generation`.
    pub(super) async fn install(
        ctx: &SessionContext,
        store: &StateStore,
        generation: u64,
        new_frontier_us: i64,
    ) -> Result<Option<Self>> {
        let Some(cache) = ctx.state().config().get_extension::<NativeCache>() else {
            return Ok(None);
        };
        // The reference pass's row: `validated_events`' columns (the index's
        // strings as the scan reads them, the live rows' plain).
        let view = ctx.table("validated_events").await?;
        let view = Arc::new(view.schema().as_arrow().clone());
        let names: Vec<&str> = view
            .fields()
            .iter()
            .take(9)
            .map(|f| f.name().as_str())
            .collect();
        if names != LIVE_COLUMNS {
            return Err(Error::Internal(format!(
                "validated_events has columns {names:?}, the fold's tap routes {LIVE_COLUMNS:?}"
            )));
        }
        let live_schema = plain(&view, 9);
        let index_field = Arc::new(view.field(0).clone());
        let index = data_name(generation, "event-index");
        let live = data_name(generation, "live-events");
        let index_sink = Sink::open(
            store,
            &index,
            Arc::new(Schema::new(vec![index_field.as_ref().clone()])),
            state_props(IDS)?,
        )?;
        let live_sink = Sink::open(store, &live, Arc::clone(&live_schema), state_props(ROWS)?)?;
        let (index_tx, index_rx) = tokio::sync::mpsc::channel(WRITER_QUEUE);
        let (live_tx, live_rx) = tokio::sync::mpsc::channel(WRITER_QUEUE);
        let tap = Arc::new(FoldTap::new(
            new_frontier_us,
            live_schema,
            index_field,
            Senders {
                index: index_tx,
                live: live_tx,
            },
            TAP_CAP,
        ));
        cache.tap_next_build(Arc::clone(&tap));
        Ok(Some(Self {
            tap,
            generation,
            index: (index, Some(writer(index_sink, index_rx))),
            live: (live, Some(writer(live_sink, live_rx))),
        }))
    }

    /// The writers' sinks, once the scan has let go of their channels.
    async fn sinks(&mut self) -> Result<(Sink, Sink)> {
        self.tap.close();
        let mut out = Vec::new();
        for w in [self.index.1.take(), self.live.1.take()] {
            let w = w.ok_or_else(|| Error::Internal("the fold's writers were taken".into()))?;
            out.push(
                w.await
                    .map_err(|e| Error::Internal(format!("a fold writer failed: {e}")))??,
            );
        }
        let live = out.pop();
        let index = out.pop();
        Ok((index.expect("two sinks"), live.expect("two sinks")))
    }
}

/// Batches a writer's channel holds before the scan waits for it.
const WRITER_QUEUE: usize = 8;

/// Most bytes the tap keeps whole before the fold reads the history itself
/// instead (rows whose place the scan could not decide: a few thousand in
/// time-ordered input).
const TAP_CAP: usize = 256 << 20;

/// A task writing what `rx` brings to `sink`.
fn writer(mut sink: Sink, mut rx: tokio::sync::mpsc::Receiver<RecordBatch>) -> Writer {
    tokio::spawn(async move {
        while let Some(batch) = rx.recv().await {
            sink.write(&batch).await?;
        }
        Ok(sink)
    })
}

/// Runs the one-pass fold. `started` holds the conversations started
/// before the frontier (all of them, or, when the scan routed the rows,
/// at least those of the rows it left: [`FromScan::conversations`]) and
/// `repeated` is the build's repeated-id function. `scan`: what the
/// build's scan routed through its tap, if one was handed to it, or why
/// it could not be used.
pub(super) async fn fold(
    ctx: &SessionContext,
    store: &StateStore,
    params: &Params,
    generation: u64,
    repeated: &ScalarUDF,
    scan: Option<std::result::Result<FromScan, String>>,
    started: &StartedSet,
) -> Result<Placed> {
    // The started conversations as a set of the statements' function:
    // a join would copy every row of the history to add one column.
    ctx.register_udf(ScalarUDF::from(StartedIn::new(Arc::clone(&started.set))));
    ctx.register_udf(repeated.clone().with_aliases([REPEATED_ID_FN]));
    let placed = match scan {
        Some(Ok(scan)) => from_scan(ctx, store, params, generation, scan, &started.set).await,
        _ if !started.every => Err(Error::Internal(
            "the fold's started set holds only the conversations the scan left".into(),
        )),
        Some(Err(why)) => {
            if std::env::var_os("SUPPORTFUNNEL_STATE_TIMINGS").is_some() {
                eprintln!("state: the scan's tap was not used ({why}); the fold reads the events");
            }
            place(ctx, store, params, generation).await
        }
        None => place(ctx, store, params, generation).await,
    };
    ctx.deregister_udf(repeated.name());
    ctx.deregister_udf(REPEATED_ID_FN);
    ctx.deregister_udf(STARTED_FN);
    placed
}

/// [`fold`] once its functions are registered.
async fn place(
    ctx: &SessionContext,
    store: &StateStore,
    params: &Params,
    generation: u64,
) -> Result<Placed> {
    let df = plan(ctx, "fold_places", params).await?;
    let rows = plain(&Arc::new(df.schema().as_arrow().clone()), 9);
    let ids = Arc::new(Schema::new(vec![rows.field(0).clone()]));
    let row_props = state_props(ROWS)?;

    let index = data_name(generation, "event-index");
    let live = data_name(generation, "live-events");
    let scratch = data_name(generation, "repeated-tmp");
    let mut index_out = Sink::open(store, &index, ids, state_props(IDS)?)?;
    let mut live_out = Sink::open(store, &live, Arc::clone(&rows), row_props)?;
    let mut repeated_out = Sink::open(
        store,
        &scratch,
        Arc::clone(&rows),
        crate::io::scratch::writer_properties(),
    )?;

    let mut stream = df.execute_stream().await?;
    // Where the pass's time goes, for SUPPORTFUNNEL_STATE_TIMINGS: waiting
    // for rows (the scan and the rules) or writing them.
    let (mut waited, mut wrote) = (Duration::ZERO, Duration::ZERO);
    let (mut rows_in, mut repeated_rows) = (0usize, 0usize);
    loop {
        let t = Instant::now();
        let Some(batch) = stream.next().await else {
            break;
        };
        waited += t.elapsed();
        let t = Instant::now();
        let batch = batch?;
        rows_in += batch.num_rows();
        let maybe_copied = flag(&batch, 9)?;
        repeated_rows += maybe_copied.true_count();
        let folded = flag(&batch, 10)?;
        let only_copy = not(&maybe_copied)?;
        index_out
            .write(&take(&batch, &and(&only_copy, &folded)?, 1)?)
            .await?;
        live_out
            .write(&take(&batch, &and(&only_copy, &not(&folded)?)?, 9)?)
            .await?;
        repeated_out.write(&take(&batch, &maybe_copied, 9)?).await?;
        wrote += t.elapsed();
    }
    drop(stream);
    if std::env::var_os("SUPPORTFUNNEL_STATE_TIMINGS").is_some() {
        eprintln!(
            "state: fold pass: {rows_in} valid rows ({repeated_rows} of ids that may have \
             copies); waited {:.3}s for rows, routed and wrote them in {:.3}s",
            waited.as_secs_f64(),
            wrote.as_secs_f64()
        );
    }
    repeated_out.close().await?;
    let folded_duplicates =
        rank_repeated(ctx, store, params, &scratch, &mut index_out, &mut live_out).await?;
    index_out.close().await?;
    live_out.close().await?;
    Ok(Placed {
        index,
        live,
        folded_duplicates,
        from_scan: false,
    })
}

/// What the scan's tap left, with the files its writers wrote: the fold
/// places the rows the scan could not, then closes them. Dropped unused,
/// the files are abandoned.
pub(super) struct FromScan {
    tapped: crate::tables::native::tap::Tapped,
    index_out: Sink,
    live_out: Sink,
    index: String,
    live: String,
}

impl ScanFold {
    /// What the scan left, once its tasks have let go of the writers; or
    /// why the fold must read the history itself: the tap could not
    /// follow, a writer failed (the state's store refused a write), or the
    /// build read other files than the fold's.
    pub(super) async fn finish(
        mut self,
        ctx: &SessionContext,
    ) -> Result<std::result::Result<FromScan, String>> {
        let key = crate::tables::native::node::build_key_digest(ctx).await?;
        let tapped = self.tap.take(key);
        let sinks = self.sinks().await;
        Ok(match (tapped, sinks) {
            (Ok(tapped), Ok((index_out, live_out))) => Ok(FromScan {
                tapped,
                index_out,
                live_out,
                index: std::mem::take(&mut self.index.0),
                live: std::mem::take(&mut self.live.0),
            }),
            (Err(why), _) => Err(why),
            (_, Err(e)) => Err(e.to_string()),
        })
    }
}

impl FromScan {
    /// The conversations of the rows the scan left: the only ones the
    /// fold looks up in the started set.
    pub(super) fn conversations(&self) -> Result<Interner> {
        let conv = live_column("conversation_id")?;
        let mut set = Interner::default();
        for rows in self.tapped.deferred.iter().chain(&self.tapped.repeated) {
            each_str(rows.column(conv), |v| {
                if let Some(v) = v {
                    set.intern(v.as_bytes());
                }
            })?;
        }
        Ok(set)
    }
}

/// The fold of the rows the scan routed: its index and live events get
/// the rows the scan left (lifecycle rows, folded when their conversation
/// is in `started`; the ids that may have copies, ranked).
async fn from_scan(
    ctx: &SessionContext,
    store: &StateStore,
    params: &Params,
    generation: u64,
    scan: FromScan,
    started: &Interner,
) -> Result<Placed> {
    let timings = std::env::var_os("SUPPORTFUNNEL_STATE_TIMINGS").is_some();
    let FromScan {
        tapped,
        mut index_out,
        mut live_out,
        index,
        live,
    } = scan;
    let t = Instant::now();
    let conv = live_column("conversation_id")?;
    for rows in &tapped.deferred {
        let folded = str_test(rows.column(conv), |v| started.lookup(v).is_some())?;
        index_out.write(&take(rows, &folded, 1)?).await?;
        live_out
            .write(&filter_record_batch(rows, &not(&folded)?)?)
            .await?;
    }
    let mut folded_duplicates = 0;
    if let Some(first) = tapped.repeated.first() {
        let scratch = data_name(generation, "repeated-tmp");
        let ranked = async {
            let mut repeated_out = Sink::open(
                store,
                &scratch,
                first.schema(),
                crate::io::scratch::writer_properties(),
            )?;
            for rows in &tapped.repeated {
                repeated_out.write(rows).await?;
            }
            repeated_out.close().await?;
            rank_repeated(ctx, store, params, &scratch, &mut index_out, &mut live_out).await
        }
        .await;
        let _ = store.delete(&scratch).await;
        folded_duplicates = ranked?;
    }
    let c = tapped.counts;
    drop(tapped);
    index_out.close().await?;
    live_out.close().await?;
    if timings {
        eprintln!(
            "state: fold from the scan: {} ids folded and {} rows live as the scan read them; \
             {} lifecycle rows and {} rows of ids that may have copies placed after it in {:.3}s",
            c.folded,
            c.live,
            c.deferred,
            c.repeated,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(Placed {
        index,
        live,
        folded_duplicates,
        from_scan: true,
    })
}

/// Column `name`'s position in the live events.
fn live_column(name: &str) -> Result<usize> {
    LIVE_COLUMNS
        .iter()
        .position(|c| *c == name)
        .ok_or_else(|| Error::Internal(format!("the live events have no {name}")))
}

/// Ranks the rows of ids that may have copies (the scratch file
/// `scratch`), then routes them as their surviving copy says; returns the
/// valid rows of folded ids less one per folded id.
async fn rank_repeated(
    ctx: &SessionContext,
    store: &StateStore,
    params: &Params,
    scratch: &str,
    index_out: &mut Sink,
    live_out: &mut Sink,
) -> Result<u64> {
    let scratch_url = store.url_of(scratch);
    let ranked = async {
        ctx.register_parquet("fold_repeated", &scratch_url, ParquetReadOptions::default())
            .await?;
        let mut stream = plan(ctx, "repeated_places", params)
            .await?
            .execute_stream()
            .await?;
        let mut folded_duplicates = 0u64;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let folded = flag(&batch, 9)?;
            let winner = flag(&batch, 10)?;
            let folded_winner = and(&folded, &winner)?;
            folded_duplicates += (folded.true_count() - folded_winner.true_count()) as u64;
            index_out.write(&take(&batch, &folded_winner, 1)?).await?;
            live_out.write(&take(&batch, &not(&folded)?, 9)?).await?;
        }
        Ok::<_, Error>(folded_duplicates)
    }
    .await;
    ctx.deregister_table("fold_repeated")?;
    let _ = store.delete(scratch).await;
    ranked
}

/// The message index and the live messages of a full run. The reference
/// statements (`message_index`, then `live_messages`) aggregate the
/// deliveries, write the index, then read every delivery again and join
/// the index back. Here one aggregation (`message_index_of_full_run`)
/// says of every id whether it is folded: the folded ones go to the index,
/// the few others are kept; then the rows not sent before the new
/// frontier (`messages_not_before`: the only ones that can stay live)
/// are read, and those of ids kept, or of no id, are the live messages.
/// The ids kept are counted in the pool as "fold: messages"; a refusal is
/// the caller's to fall back on the statements.
pub(super) async fn messages(
    ctx: &SessionContext,
    store: &StateStore,
    params: &Params,
    generation: u64,
) -> Result<MessagesPlaced> {
    let held = MemoryConsumer::new("fold: messages").register(&ctx.runtime_env().memory_pool);
    let df = plan(ctx, "message_index_of_full_run", params).await?;
    let index_name = data_name(generation, "message-index");
    let index_schema = plain(&Arc::new(df.schema().as_arrow().clone()), 1);
    let mut index_out = Sink::open(store, &index_name, index_schema, state_props(IDS)?)?;
    // The ids not folded, whose rows stay live.
    let mut kept = Interner::default();
    let (mut folded_ids, mut folded_rows) = (0u64, 0u64);
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let folded = flag(&batch, 2)?;
        let copies = cast(batch.column(1), &DataType::Int64)?;
        let copies = copies.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        folded_ids += folded.true_count() as u64;
        folded_rows += copies
            .iter()
            .zip(folded.iter())
            .filter(|(_, f)| *f == Some(true))
            .map(|(n, _)| n.unwrap_or(0).max(0) as u64)
            .sum::<u64>();
        index_out.write(&take(&batch, &folded, 1)?).await?;
        let not_folded = not(&folded)?;
        let ids = filter(batch.column(0), &not_folded)?;
        each_str(&ids, |v| {
            if let Some(v) = v {
                kept.intern(v.as_bytes());
            }
        })?;
        held.try_resize(kept.bytes())?;
    }
    drop(stream);

    let df = plan(ctx, "messages_not_before", params).await?;
    let live_name = data_name(generation, "live-messages");
    let live_schema = plain(&Arc::new(df.schema().as_arrow().clone()), 9);
    let mut live_out = Sink::open(store, &live_name, live_schema, state_props(ROWS)?)?;
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let mut live = datafusion::arrow::array::BooleanBuilder::with_capacity(batch.num_rows());
        each_str(batch.column(0), |v| {
            live.append_value(v.is_none_or(|v| kept.lookup(v.as_bytes()).is_some()))
        })?;
        live_out
            .write(&filter_record_batch(&batch, &live.finish())?)
            .await?;
    }
    index_out.close().await?;
    live_out.close().await?;
    Ok(MessagesPlaced {
        index: index_name,
        live: live_name,
        folded_duplicates: folded_rows - folded_ids,
    })
}

/// What [`messages`] wrote.
pub(super) struct MessagesPlaced {
    /// The message index segment.
    pub index: String,
    /// The live messages.
    pub live: String,
    /// Deliveries of folded ids, less one per folded id.
    pub folded_duplicates: u64,
}

/// How the one pass writes the state's files: DataFusion's defaults (as
/// the reference fold writes them) but a faster codec. `ids`: a file of
/// one column of unique ids (the indexes, the started conversations),
/// written with LZ4 and no dictionary (one is only tried and dropped);
/// the live rows with zstd level 1 and dictionaries. A full run writes an
/// id per event of the history while the scan holds both cores, and every
/// later run reads the index once: LZ4 writes and reads it faster than
/// zstd, for a larger file (docs/INCREMENTAL.md).
fn state_props(ids: bool) -> Result<WriterProperties> {
    let mut options = TableParquetOptions::default();
    options.global.compression = Some(if ids { "lz4_raw" } else { "zstd(1)" }.into());
    // Row groups of a manageable size: the writer buffers one outside the
    // pool, and a later run's check of new ids against the index skips
    // row groups by their statistics.
    options.global.max_row_group_size = STATE_ROW_GROUP;
    // The Arrow writer adds the schema itself.
    options.global.skip_arrow_metadata = true;
    Ok(WriterPropertiesBuilder::try_from(&options)?
        .set_dictionary_enabled(!ids)
        .build())
}

/// [`state_props`] of a file of ids.
const IDS: bool = true;

/// [`state_props`] of a file of rows.
const ROWS: bool = false;

/// Rows per row group of the state's files the one pass writes.
const STATE_ROW_GROUP: usize = 128 * 1024;

/// The name `fold_places` and `repeated_places` call the started set by.
const STARTED_FN: &str = "supportfunnel_fold_started";

/// The conversations started before the new frontier, as a set for the
/// fold's lookups. The operators' interner: ids of up to 12 bytes live in
/// its table itself, so a lookup is one probe, and the set is a few
/// allocations, not one per id.
pub(super) struct StartedSet {
    pub set: Arc<Interner>,
    /// Every such conversation (else only those the scan's rows need).
    pub every: bool,
    _held: datafusion::execution::memory_pool::MemoryReservation,
}

/// Writes `df`'s conversations (one column: the conversations started
/// before the new frontier) to the state file `name` and keeps those in
/// `needed` (every one when `None`) as the fold's set, counted in the
/// pool as "fold: started conversations". The file is written in the same
/// read, where reading it back would decode and intern millions of ids
/// for the few hundred thousand rows the scan's tap leaves.
pub(super) async fn started(
    ctx: &SessionContext,
    store: &StateStore,
    df: datafusion::dataframe::DataFrame,
    name: &str,
    needed: Option<&Interner>,
) -> Result<StartedSet> {
    let held =
        MemoryConsumer::new("fold: started conversations").register(&ctx.runtime_env().memory_pool);
    let schema = plain(&Arc::new(df.schema().as_arrow().clone()), 1);
    let mut out = Sink::open(store, name, schema, state_props(IDS)?)?;
    let mut set = Interner::default();
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        each_str(batch.column(0), |v| {
            if let Some(v) = v {
                if needed.is_none_or(|n| n.lookup(v.as_bytes()).is_some()) {
                    set.intern(v.as_bytes());
                }
            }
        })?;
        held.try_resize(set.bytes())?;
        out.write(&batch.project(&[0])?).await?;
    }
    out.close().await?;
    Ok(StartedSet {
        set: Arc::new(set),
        every: needed.is_none(),
        _held: held,
    })
}

/// `supportfunnel_fold_started(conversation_id)`: whether the conversation
/// started before the new frontier (false for NULL).
struct StartedIn {
    set: Arc<Interner>,
    signature: Signature,
}

impl std::fmt::Debug for StartedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StartedIn({} conversations)", self.set.len())
    }
}

impl StartedIn {
    fn new(set: Arc<Interner>) -> Self {
        Self {
            set,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl PartialEq for StartedIn {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.set, &other.set)
    }
}
impl Eq for StartedIn {}
impl std::hash::Hash for StartedIn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.set) as usize).hash(state)
    }
}

impl ScalarUDFImpl for StartedIn {
    fn name(&self) -> &str {
        STARTED_FN
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let a = args.args[0].to_array(args.number_rows)?;
        let out = str_test(&a, |v| self.set.lookup(v).is_some())?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Statement `name` of fold.sql with `params` bound.
async fn plan(
    ctx: &SessionContext,
    name: &str,
    params: &Params,
) -> Result<datafusion::dataframe::DataFrame> {
    Ok(ctx
        .sql(statement("fold", name))
        .await?
        .with_param_values(params.clone())?)
}

/// Boolean column `i` of `batch`, NULL as false.
fn flag(batch: &RecordBatch, i: usize) -> Result<BooleanArray> {
    let a = cast(batch.column(i), &DataType::Boolean)?;
    let a = a.as_boolean();
    Ok(match a.nulls() {
        Some(_) => prep_null_mask_filter(a),
        None => a.clone(),
    })
}

/// The rows of `batch` where `mask` holds, first `columns` columns.
fn take(batch: &RecordBatch, mask: &BooleanArray, columns: usize) -> Result<RecordBatch> {
    let projected = batch.project(&(0..columns).collect::<Vec<_>>())?;
    Ok(filter_record_batch(&projected, mask)?)
}

/// The first `columns` fields of `schema`, with the string types the
/// reference fold writes (DataFusion reads Parquet strings as views; the
/// state's files hold plain strings).
fn plain(schema: &SchemaRef, columns: usize) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .take(columns)
        .map(|f| match f.data_type() {
            DataType::Utf8View | DataType::LargeUtf8 => {
                f.as_ref().clone().with_data_type(DataType::Utf8)
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// `declared` with the plain string fields that `batch` brings as views
/// typed as views: the Parquet file holds the same strings.
fn views_kept(declared: &SchemaRef, batch: &RecordBatch) -> SchemaRef {
    let fields: Vec<Field> = declared
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| match (f.data_type(), c.data_type()) {
            (DataType::Utf8, DataType::Utf8View) => {
                f.as_ref().clone().with_data_type(DataType::Utf8View)
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    if fields.len() != declared.fields().len() {
        return Arc::clone(declared);
    }
    Arc::new(Schema::new(fields))
}

/// One Parquet file of the state being written. Dropped without
/// [`Sink::close`], its upload is abandoned and no file appears.
///
/// The writer is made with the first batch: a string column the batches
/// bring as views is written from the views (the Parquet column is the
/// same plain string either way), where a cast to `schema`'s plain strings
/// would copy every value once more before the encoder copies it again.
struct Sink {
    writer: Option<AsyncArrowWriter<BufWriter>>,
    /// Until the writer is made.
    object: Option<(BufWriter, WriterProperties)>,
    /// The declared schema, then the one written.
    schema: SchemaRef,
}

impl Sink {
    fn open(
        store: &StateStore,
        name: &str,
        schema: SchemaRef,
        props: WriterProperties,
    ) -> Result<Self> {
        let object = BufWriter::new(store.store_arc(), store.data_path(name));
        Ok(Self {
            writer: None,
            object: Some((object, props)),
            schema,
        })
    }

    /// The writer, made for `batch`'s string views if this is the first.
    fn writer(&mut self, batch: Option<&RecordBatch>) -> Result<&mut AsyncArrowWriter<BufWriter>> {
        if let Some((object, props)) = self.object.take() {
            if let Some(batch) = batch {
                self.schema = views_kept(&self.schema, batch);
            }
            self.writer = Some(AsyncArrowWriter::try_new(
                object,
                Arc::clone(&self.schema),
                Some(props),
            )?);
        }
        self.writer
            .as_mut()
            .ok_or_else(|| Error::Internal("a state file's writer was closed".into()))
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.writer(Some(batch))?;
        let columns = batch
            .columns()
            .iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(Arc::clone(c))
                } else {
                    cast(c, f.data_type())
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        self.writer(None)?.write(&batch).await?;
        Ok(())
    }

    async fn close(mut self) -> Result<()> {
        self.writer(None)?;
        if let Some(writer) = self.writer.take() {
            writer.close().await?;
        }
        Ok(())
    }
}
