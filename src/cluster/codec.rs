//! The operators' codecs: how a plan with our operators ([`crate::tables::native`])
//! travels from the client to the scheduler (logical) and from the
//! scheduler to the executors (physical).
//!
//! Each codec wraps Ballista's own (which knows its shuffle nodes and the
//! file formats) and hands it everything that is not ours. Ours is a
//! marked JSON document: the node's [`Wire`] form (relation, columns,
//! range, the type of `ts`) and, for the execution plan, the `events`
//! table it reads a few rows of again, as a serialized table scan. The
//! node's input (the scan of `events`) travels as an ordinary child.
//!
//! On an executor the decoded operator builds into the executor's own cache
//! ([`crate::tables::native::node::executor_cache`]): the tasks of every job over
//! the same files share one build, as the statements of one process do.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{
    AggregateUDF, Extension, LogicalPlan, LogicalPlanBuilder, ScalarUDF, WindowUDF,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use prost::Message;
use serde::{Deserialize, Serialize};

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};

use crate::tables::native::node::{executor_cache, NativeExec, NativeNode, Wire};

/// Marks our encoding: Ballista's protobuf messages never start with it
/// (a protobuf field key byte of 0 is invalid).
const MARK: &[u8] = b"\0supportfunnel-native\0";

/// [`Wire`] as it travels.
#[derive(Debug, Serialize, Deserialize)]
struct Doc {
    relation: String,
    projection: Option<Vec<usize>>,
    range: (i64, i64),
    /// DataFusion's protobuf `ArrowType`.
    ts_type: Vec<u8>,
    rows: Option<usize>,
    partitions: usize,
    options: (u32, Option<usize>, bool, bool),
    /// Execution plans only: a scan of `events`, a serialized logical plan.
    events: Option<Vec<u8>>,
    /// Execution plans of one task only: their input, which is not a child
    /// (see `NativeExec`), a serialized physical plan.
    input: Option<Vec<u8>>,
}

fn internal(what: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("native operator codec: {what}: {e}"))
}

fn encode_type(t: &DataType) -> DFResult<Vec<u8>> {
    let proto = datafusion_proto::protobuf::ArrowType::try_from(t)
        .map_err(|e| internal("the type of ts", e))?;
    Ok(proto.encode_to_vec())
}

fn decode_type(bytes: &[u8]) -> DFResult<DataType> {
    let proto = datafusion_proto::protobuf::ArrowType::decode(bytes)
        .map_err(|e| internal("the type of ts", e))?;
    DataType::try_from(&proto).map_err(|e| internal("the type of ts", e))
}

fn to_doc(wire: Wire, events: Option<Vec<u8>>, input: Option<Vec<u8>>) -> DFResult<Doc> {
    Ok(Doc {
        relation: wire.relation,
        projection: wire.projection,
        range: wire.range,
        ts_type: encode_type(&wire.ts_type)?,
        rows: wire.rows,
        partitions: wire.partitions,
        options: wire.options,
        events,
        input,
    })
}

fn from_doc(doc: &Doc) -> DFResult<Wire> {
    Ok(Wire {
        relation: doc.relation.clone(),
        projection: doc.projection.clone(),
        range: doc.range,
        ts_type: decode_type(&doc.ts_type)?,
        rows: doc.rows,
        partitions: doc.partitions,
        options: doc.options,
    })
}

fn write_doc(doc: &Doc, buf: &mut Vec<u8>) -> DFResult<()> {
    buf.extend_from_slice(MARK);
    serde_json::to_writer(buf, doc).map_err(|e| internal("encoding", e))
}

/// Our document in `buf`, if `buf` is ours.
fn read_doc(buf: &[u8]) -> Option<DFResult<Doc>> {
    let body = buf.strip_prefix(MARK)?;
    Some(serde_json::from_slice(body).map_err(|e| internal("decoding", e)))
}

/// A scan of `events` over `provider`, serialized (Ballista's codec knows
/// Parquet listings).
fn encode_events(provider: &Arc<dyn TableProvider>) -> DFResult<Vec<u8>> {
    let plan = LogicalPlanBuilder::scan(
        crate::tables::EVENTS.name,
        provider_as_source(Arc::clone(provider)),
        None,
    )?
    .build()?;
    let bytes = datafusion_proto::bytes::logical_plan_to_bytes_with_extension_codec(
        &plan,
        &BallistaLogicalExtensionCodec::default(),
    )?;
    Ok(bytes.to_vec())
}

fn decode_events(bytes: &[u8], ctx: &TaskContext) -> DFResult<Arc<dyn TableProvider>> {
    let plan = datafusion_proto::bytes::logical_plan_from_bytes_with_extension_codec(
        bytes,
        ctx,
        &BallistaLogicalExtensionCodec::default(),
    )?;
    match plan {
        LogicalPlan::TableScan(scan) => source_as_provider(&scan.source),
        other => Err(internal(
            "the events table",
            format!("expected a table scan, got {}", other.display()),
        )),
    }
}

/// The function codecs of both traits (same signatures): Ballista's.
macro_rules! functions_from_inner {
    () => {
        fn try_decode_udf(&self, name: &str, buf: &[u8]) -> DFResult<Arc<ScalarUDF>> {
            self.inner.try_decode_udf(name, buf)
        }

        fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> DFResult<()> {
            self.inner.try_encode_udf(node, buf)
        }

        fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> DFResult<Arc<AggregateUDF>> {
            self.inner.try_decode_udaf(name, buf)
        }

        fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> DFResult<()> {
            self.inner.try_encode_udaf(node, buf)
        }

        fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> DFResult<Arc<WindowUDF>> {
            self.inner.try_decode_udwf(name, buf)
        }

        fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> DFResult<()> {
            self.inner.try_encode_udwf(node, buf)
        }
    };
}

/// Ballista's logical codec, plus [`NativeNode`].
#[derive(Debug, Default)]
pub struct LogicalCodec {
    inner: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> DFResult<Extension> {
        let Some(doc) = read_doc(buf) else {
            return self.inner.try_decode(buf, inputs, ctx);
        };
        let input = inputs
            .first()
            .cloned()
            .ok_or_else(|| internal("decoding", "a native relation without its input"))?;
        Ok(Extension {
            node: Arc::new(NativeNode::from_wire(&from_doc(&doc?)?, input)?),
        })
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> DFResult<()> {
        match node.node.as_any().downcast_ref::<NativeNode>() {
            Some(native) => write_doc(&to_doc(native.to_wire(), None, None)?, buf),
            None => self.inner.try_encode(node, buf),
        }
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> DFResult<Arc<dyn TableProvider>> {
        self.inner
            .try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> DFResult<()> {
        self.inner.try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> DFResult<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> DFResult<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    functions_from_inner!();
}

/// Ballista's physical codec, plus [`NativeExec`].
#[derive(Debug, Default)]
pub struct PhysicalCodec {
    inner: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let Some(doc) = read_doc(buf) else {
            return self.inner.try_decode(buf, inputs, ctx, proto_converter);
        };
        let doc = doc?;
        let input = match (&doc.input, inputs.first()) {
            (Some(bytes), _) => {
                datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(
                    bytes, ctx, self,
                )?
            }
            (None, Some(input)) => Arc::clone(input),
            (None, None) => {
                return Err(internal("decoding", "a native operator without its input"))
            }
        };
        let events = decode_events(
            doc.events
                .as_deref()
                .ok_or_else(|| internal("decoding", "a native operator without its table"))?,
            ctx,
        )?;
        Ok(Arc::new(NativeExec::from_wire(
            &from_doc(&doc)?,
            input,
            events,
            executor_cache(),
        )?))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DFResult<()> {
        match node.downcast_ref::<NativeExec>() {
            Some(native) => {
                let wire = native.to_wire();
                // One task's input is not a child: it travels inside.
                let input = if wire.options.3 {
                    Some(
                        datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(
                            Arc::clone(native.input()),
                            self,
                        )?
                        .to_vec(),
                    )
                } else {
                    None
                };
                let events = Some(encode_events(native.events())?);
                write_doc(&to_doc(wire, events, input)?, buf)
            }
            None => self.inner.try_encode(node, buf, proto_converter),
        }
    }

    functions_from_inner!();
}
