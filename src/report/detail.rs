//! The items behind each number of the report: `report --detail METRIC` and
//! the `report_detail(…)` table function (docs/METRICS.md "Detail").
//!
//! A detail run is the report's run up to its sections: the same periods,
//! zone and filters, the same steps (`report_sessions`, …), then the named
//! statement of `queries/report/07_detail.sql` for the metric instead of
//! the sections. The statements read the relations the sections read
//! (`report_people`, `report_human`, …), so the report's number is the
//! detail rows aggregated as [`Aggregate`] says, per period — which the
//! tests check for every metric.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{cast, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};

use crate::engine::query::{self, Params};
use crate::error::{Error, Result};
use crate::settings::period::Periods;

/// The detail statements, one per metric (`-- name:`).
const DETAIL_SQL: &str = include_str!("../../queries/report/07_detail.sql");
const DETAIL_FILE: &str = "queries/report/07_detail.sql";

/// How a metric is recomputed from its detail rows, per period (and
/// segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// `count(*)`: the rows are the items counted.
    Count,
    /// `avg(in_numerator)`: the rows are the denominator's items; NULL
    /// when there are none.
    Rate,
    /// `avg(value)`: NULL when there are no rows.
    Mean,
    /// The exact median of `value` (the mean of the two middle values for
    /// an even count): NULL when there are no rows.
    Median,
}

impl Aggregate {
    /// Its name in docs and `--help`.
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Count => "count(*)",
            Aggregate::Rate => "avg(in_numerator)",
            Aggregate::Mean => "avg(value)",
            Aggregate::Median => "median(value)",
        }
    }
}

/// What a metric's segments are, when it has any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segments {
    None,
    Human,
    Tables,
    Reasons,
}

/// One metric of the report and how its detail is listed.
#[derive(Debug, Clone, Copy)]
pub struct DetailMetric {
    /// The report section.
    pub section: &'static str,
    /// The metric's name, as in the report.
    pub metric: &'static str,
    /// How the metric is recomputed from its rows.
    pub aggregate: Aggregate,
    segments: Segments,
    /// The named statements of [`DETAIL_SQL`] that list it (their rows
    /// appended).
    statements: &'static [&'static str],
}

impl DetailMetric {
    /// The metric's segments (none for most).
    pub fn segments(&self) -> Vec<&'static str> {
        match self.segments {
            Segments::None => vec![],
            Segments::Human => vec!["after_self_serve", "from_start"],
            Segments::Tables => vec!["events", "messages"],
            Segments::Reasons => crate::rules::REJECT_REASONS.to_vec(),
        }
    }

    /// Whether its rows come from the whole input (data quality) rather
    /// than from the two periods' sessions and deliveries.
    pub fn whole_input(&self) -> bool {
        self.section == "data_quality"
    }

    /// Whether it lists article views (which need the deduplicated events).
    fn needs_article_views(&self) -> bool {
        self.statements.iter().any(|s| s.contains("article"))
    }
}

macro_rules! metric {
    ($section:literal, $metric:literal, $agg:ident) => {
        metric!($section, $metric, $agg, None, [$metric])
    };
    ($section:literal, $metric:literal, $agg:ident, $seg:ident, [$($stmt:literal),+]) => {
        DetailMetric {
            section: $section,
            metric: $metric,
            aggregate: Aggregate::$agg,
            segments: Segments::$seg,
            statements: &[$($stmt),+],
        }
    };
}

/// Every metric of the report, in the report's order.
pub const METRICS: &[DetailMetric] = &[
    metric!("funnel", "proactive_messages", Count),
    metric!("funnel", "people_seeking_support", Count),
    metric!("funnel", "people_tried_self_serve", Count),
    metric!("funnel", "people_resolved_self_serve", Count),
    metric!("funnel", "people_human_after_self_serve", Count),
    metric!("funnel", "people_human_from_start", Count),
    metric!("funnel", "people_stopped", Count),
    metric!("sessions", "sessions_total", Count),
    metric!("sessions", "sessions_self_serve_resolved", Count),
    metric!("sessions", "sessions_human_supported", Count),
    metric!("sessions", "sessions_human_after_self_serve", Count),
    metric!("sessions", "sessions_human_from_start", Count),
    metric!("sessions", "sessions_stopped", Count),
    metric!("proactive", "messages_delivered", Count),
    metric!("proactive", "messages_opened", Count),
    metric!("proactive", "messages_clicked", Count),
    metric!("proactive", "messages_reacted", Count),
    metric!("proactive", "open_rate", Rate),
    metric!("proactive", "click_rate", Rate),
    metric!("proactive", "reaction_rate", Rate),
    metric!("self_serve", "self_serve_resolution_rate", Rate),
    metric!("self_serve", "article_views", Count),
    metric!("self_serve", "article_views_resolved", Count),
    metric!("self_serve", "articles_resolution_rate", Rate),
    metric!("self_serve", "automated_resolutions", Count),
    metric!("self_serve", "sessions_with_bot_answer", Count),
    metric!("self_serve", "sessions_automated_resolved", Count),
    metric!("self_serve", "automated_resolution_rate", Rate),
    metric!("human", "conversations", Count, Human, ["conversations"]),
    metric!(
        "human",
        "rated_conversations",
        Count,
        Human,
        ["rated_conversations"]
    ),
    metric!("human", "avg_rating", Mean, Human, ["avg_rating"]),
    metric!("human", "csat", Rate, Human, ["csat"]),
    metric!(
        "human",
        "median_first_response_s",
        Median,
        Human,
        ["median_first_response_s"]
    ),
    metric!(
        "human",
        "median_time_to_close_s",
        Median,
        Human,
        ["median_time_to_close_s"]
    ),
    metric!(
        "data_quality",
        "rows_read",
        Count,
        Tables,
        ["rows_read_events", "rows_read_messages"]
    ),
    metric!(
        "data_quality",
        "rows_rejected",
        Count,
        Reasons,
        ["rows_rejected"]
    ),
    metric!("data_quality", "duplicate_events", Count),
    metric!("data_quality", "duplicate_messages", Count),
    metric!("data_quality", "orphan_lifecycle_events", Count),
];

/// The metric called `name` (`metric` or `section.metric`).
pub fn find(name: &str) -> Result<&'static DetailMetric> {
    let (section, metric) = match name.split_once('.') {
        Some((s, m)) => (Some(s), m),
        None => (None, name),
    };
    METRICS
        .iter()
        .find(|m| m.metric == metric && section.is_none_or(|s| s == m.section))
        .ok_or_else(|| {
            let names: Vec<&str> = METRICS.iter().map(|m| m.metric).collect();
            Error::usage(format!(
                "unknown metric `{name}`; the report's metrics are: {}",
                names.join(", ")
            ))
        })
}

/// Which period's rows to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodChoice {
    /// The current period.
    Current,
    /// The previous period.
    Previous,
}

impl PeriodChoice {
    /// Its name in the `period` column.
    pub fn name(self) -> &'static str {
        match self {
            PeriodChoice::Current => "current",
            PeriodChoice::Previous => "previous",
        }
    }

    /// `current` or `previous`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "current" => Ok(PeriodChoice::Current),
            "previous" => Ok(PeriodChoice::Previous),
            other => Err(Error::usage(format!(
                "unknown period `{other}` (use current or previous)"
            ))),
        }
    }
}

/// What a detail run lists.
#[derive(Debug, Clone)]
pub struct DetailRequest {
    /// The metric ([`find`]).
    pub metric: &'static DetailMetric,
    /// Only this segment's rows (of a metric with segments).
    pub segment: Option<String>,
    /// Only this period's rows.
    pub period: Option<PeriodChoice>,
}

impl DetailRequest {
    /// A request for `metric`, checking that `segment` is one of its
    /// segments.
    pub fn new(
        metric: &str,
        segment: Option<String>,
        period: Option<PeriodChoice>,
    ) -> Result<Self> {
        let metric = find(metric)?;
        if let Some(s) = &segment {
            let known = metric.segments();
            if known.is_empty() {
                return Err(Error::usage(format!(
                    "metric {} has no segments (drop --segment)",
                    metric.metric
                )));
            }
            if !known.contains(&s.as_str()) {
                return Err(Error::usage(format!(
                    "metric {} has no segment `{s}`; its segments are: {}",
                    metric.metric,
                    known.join(", ")
                )));
            }
        }
        Ok(Self {
            metric,
            segment,
            period,
        })
    }
}

/// A metric's detail rows.
#[derive(Debug, Clone)]
pub struct Detail {
    /// The periods they belong to.
    pub periods: Periods,
    /// The rows, sorted (period, segment, keys), in [`detail_schema`].
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
}

/// The columns of every detail, whatever the metric: those a metric's
/// entity does not have are NULL. `ts` is the `events.ts` type (session
/// starts and event times keep their precision), `sent` the
/// `messages.sent_at` type.
pub fn detail_schema(ts: &DataType, sent: &DataType) -> SchemaRef {
    let s = |name: &str| Field::new(name, DataType::Utf8, true);
    let t = |name: &str| Field::new(name, ts.clone(), true);
    let m = |name: &str| Field::new(name, sent.clone(), true);
    let i = |name: &str| Field::new(name, DataType::Int64, true);
    Arc::new(Schema::new(vec![
        Field::new("section", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        s("segment"),
        Field::new("period", DataType::Utf8, false),
        Field::new("entity", DataType::Utf8, false),
        Field::new("in_numerator", DataType::Boolean, false),
        Field::new("value", DataType::Float64, true),
        s("user_id"),
        t("session_start"),
        s("conversation_id"),
        s("message_id"),
        s("event_id"),
        s("status"),
        s("reason"),
        t("ts"),
        s("event_type"),
        s("article_id"),
        t("started_at"),
        t("first_reply_at"),
        t("closed_at"),
        i("rating"),
        i("sessions"),
        i("article_views"),
        i("conversations"),
        m("sent_at"),
        s("content_type"),
        s("sender"),
        m("opened_at"),
        m("clicked_at"),
        m("reacted_at"),
    ]))
}

/// The columns a detail's rows are sorted by: period and segment, then the
/// keys, so that a run written twice is byte-identical.
const ORDER: &[&str] = &[
    "period",
    "segment",
    "user_id",
    "session_start",
    "conversation_id",
    "message_id",
    "event_id",
    "ts",
    "sent_at",
];

/// Lays `df` (one statement's result) out in `schema`: its columns cast to
/// the schema's types, the others NULL, the metric's names in front.
fn conform(df: DataFrame, schema: &Schema, m: &DetailMetric) -> Result<DataFrame> {
    let have = df.schema().clone();
    let mut exprs = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let name = field.name().as_str();
        let expr = match name {
            "section" => lit(m.section),
            "metric" => lit(m.metric),
            _ if have.field_with_unqualified_name(name).is_ok() => {
                cast(col(format!("\"{name}\"")), field.data_type().clone())
            }
            _ => lit(ScalarValue::try_from(field.data_type())?),
        };
        exprs.push(expr.alias(name));
    }
    Ok(df.select(exprs)?)
}

/// Runs the metric's statements on `ctx` (the report's context after its
/// steps, or any context with the views for a data quality metric), keeps
/// the asked segment and period, and sorts the rows.
pub(crate) async fn list(
    ctx: &SessionContext,
    req: &DetailRequest,
    schema: &SchemaRef,
    params: &Params,
) -> Result<Vec<RecordBatch>> {
    let mut all: Option<DataFrame> = None;
    for name in req.metric.statements {
        let sql = query::named_statement(DETAIL_FILE, DETAIL_SQL, name);
        let df = ctx.sql(&sql).await?;
        let df = df.with_param_values(used_params(&sql, params))?;
        let df = conform(df, schema, req.metric)?;
        all = Some(match all {
            None => df,
            Some(prev) => prev.union(df)?,
        });
    }
    let mut df = all.ok_or_else(|| Error::Internal("a metric without statements".into()))?;
    if let Some(segment) = &req.segment {
        df = df.filter(col("segment").eq(lit(segment.as_str())))?;
    }
    if let Some(period) = req.period {
        df = df.filter(col("period").eq(lit(period.name())))?;
    }
    let order = ORDER
        .iter()
        .map(|c| col(format!("\"{c}\"")).sort(true, true))
        .collect();
    Ok(df.sort(order)?.collect().await?)
}

/// The parameters a statement uses: DataFusion refuses values for
/// placeholders a statement does not have.
fn used_params(sql: &str, params: &Params) -> Params {
    params
        .iter()
        .filter(|(name, _)| sql.contains(&format!("${name}")))
        .cloned()
        .collect()
}

/// Whether the report's context needs the article views relation for `m`.
pub(crate) fn needs_article_views(m: &DetailMetric) -> bool {
    m.needs_article_views()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_exists_and_every_statement_is_used() {
        let names: Vec<String> = query::named_statements(DETAIL_SQL)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let used: Vec<&str> = METRICS.iter().flat_map(|m| m.statements.to_vec()).collect();
        for u in &used {
            assert!(names.iter().any(|n| n == u), "{DETAIL_FILE} has no `{u}`");
        }
        for n in &names {
            assert!(used.contains(&n.as_str()), "`{n}` is listed by no metric");
        }
    }

    #[test]
    fn metrics_are_found_by_name_and_by_section() {
        assert_eq!(find("csat").unwrap().section, "human");
        assert_eq!(
            find("self_serve.article_views").unwrap().metric,
            "article_views"
        );
        assert!(find("sessions.csat").is_err());
        let e = find("nope").unwrap_err().to_string();
        assert!(
            e.contains("unknown metric `nope`") && e.contains("people_stopped"),
            "{e}"
        );
    }

    #[test]
    fn segments_are_checked() {
        assert!(DetailRequest::new("csat", Some("from_start".into()), None).is_ok());
        assert!(DetailRequest::new("csat", Some("stopped".into()), None).is_err());
        assert!(DetailRequest::new("sessions_total", Some("x".into()), None).is_err());
        assert!(DetailRequest::new("rows_rejected", Some("null_ts".into()), None).is_ok());
    }
}
