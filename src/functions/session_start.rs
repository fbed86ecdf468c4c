//! `session_start`: the sessionization window function (spec §2).
//!
//! ```sql
//! session_start(ts [, max_span [, gap]]) OVER (PARTITION BY user_id ORDER BY ts)
//! ```
//!
//! returns, for every row, the start timestamp of the session the row belongs
//! to. Rows are walked in `ts` order per partition:
//!
//! * the first non-null `ts` starts a session;
//! * a row belongs to the current session while `ts < start + max_span`
//!   (`max_span` defaults to 24 hours); the first row at or after
//!   `start + max_span` starts the next session with `start = ts`;
//! * with a `gap`, a row whose previous row is `gap` or more earlier also starts
//!   a new session, so one function covers fixed-span sessions (the report's
//!   rule), inactivity sessions (a NULL `max_span` plus a `gap`) and both at
//!   once.
//!
//! `max_span` and `gap` are constant intervals (`INTERVAL '24 hours'`, a
//! duration, or a string such as `'30 minutes'`). A NULL `gap` means "no gap
//! rule"; a NULL `max_span` means "no span limit" (pure inactivity sessions,
//! which then need a `gap`). Month intervals are refused: a month has no fixed
//! length, and the spec wants exactly 86,400 s per day whatever the zone.
//!
//! A NULL `ts` gives a NULL result and does not touch the session state. Rows
//! with equal `ts` are interchangeable: they always land in the same session,
//! so the result does not depend on how ties are ordered.
//!
//! The evaluator **streams**: it keeps only the current session's start and
//! the previous timestamp, answers row by row (`evaluate`) under DataFusion's
//! `BoundedWindowAggExec`, which can then drop every row it has answered.
//! The buffered path (`evaluate_all`, used by `WindowAggExec`) runs the same
//! state machine in one vectorized loop.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{make_array, Array, ArrayRef, Int64Array};
use datafusion::arrow::buffer::{NullBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, IntervalUnit, TimeUnit};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl,
};
use datafusion::physical_expr::expressions::Literal;

use crate::functions::timestamps;

/// Name under which the function is registered.
pub const SESSION_START: &str = "session_start";

/// Default `max_span`: the report's 24-hour session (spec §2), in nanoseconds.
pub const DEFAULT_MAX_SPAN_NANOS: i64 = crate::rules::SESSION_SECONDS * 1_000_000_000;

/// The `session_start` window function (see the module docs for semantics).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionStart {
    signature: Signature,
}

impl Default for SessionStart {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionStart {
    /// Creates the function; register it with [`session_start_udwf`].
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The function as a [`WindowUDF`], ready for `SessionContext::register_udwf`.
pub fn session_start_udwf() -> WindowUDF {
    WindowUDF::from(SessionStart::new())
}

impl WindowUDFImpl for SessionStart {
    fn name(&self) -> &str {
        SESSION_START
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    /// `ts` must be a timestamp of any unit or zone (the result keeps its type);
    /// spans are coerced to a month-day-nano interval so that `INTERVAL`,
    /// durations and strings such as `'2 hours'` are all accepted.
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.is_empty() || arg_types.len() > 3 {
            return plan_err!(
                "{SESSION_START} takes 1 to 3 arguments (ts [, max_span [, gap]]), got {}",
                arg_types.len()
            );
        }
        let mut out = Vec::with_capacity(arg_types.len());
        match &arg_types[0] {
            t @ DataType::Timestamp(_, _) => out.push(t.clone()),
            DataType::Null => out.push(DataType::Timestamp(TimeUnit::Microsecond, None)),
            DataType::Date32 | DataType::Date64 => {
                out.push(DataType::Timestamp(TimeUnit::Microsecond, None))
            }
            other => {
                return plan_err!(
                    "{SESSION_START}: the first argument must be a timestamp, got {other}"
                )
            }
        }
        for (i, t) in arg_types.iter().enumerate().skip(1) {
            let name = if i == 1 { "max_span" } else { "gap" };
            match t {
                DataType::Interval(_)
                | DataType::Duration(_)
                | DataType::Null
                | DataType::Utf8
                | DataType::Utf8View
                | DataType::LargeUtf8 => {
                    out.push(DataType::Interval(IntervalUnit::MonthDayNano))
                }
                other => {
                    return plan_err!(
                        "{SESSION_START}: {name} must be an interval such as INTERVAL '24 hours', got {other}"
                    )
                }
            }
        }
        Ok(out)
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        let data_type = match field_args.get_input_field(0) {
            Some(f) => match f.data_type() {
                t @ DataType::Timestamp(_, _) => t.clone(),
                other => {
                    return plan_err!(
                        "{SESSION_START}: the first argument must be a timestamp, got {other}"
                    )
                }
            },
            None => return plan_err!("{SESSION_START} needs a timestamp argument"),
        };
        Ok(Arc::new(Field::new(field_args.name(), data_type, true)))
    }

    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        let exprs = args.input_exprs();
        let unit = match args.input_fields().first().map(|f| f.data_type()) {
            Some(DataType::Timestamp(unit, _)) => *unit,
            other => {
                return exec_err!(
                    "{SESSION_START}: the first argument must be a timestamp, got {other:?}"
                )
            }
        };
        let constant = |idx: usize, name: &str| -> Result<Option<ScalarValue>> {
            match exprs.get(idx) {
                None => Ok(None),
                Some(e) => match e.downcast_ref::<Literal>() {
                    Some(lit) => Ok(Some(lit.value().clone())),
                    None => exec_err!(
                        "{SESSION_START}: {name} must be a constant interval, not an expression over columns"
                    ),
                },
            }
        };
        let max_span = match constant(1, "max_span")? {
            None => Some(DEFAULT_MAX_SPAN_NANOS),
            Some(v) => span_nanos(&v, "max_span")?,
        };
        let gap = match constant(2, "gap")? {
            None => None,
            Some(v) => span_nanos(&v, "gap")?,
        };
        if max_span.is_none() && gap.is_none() {
            return exec_err!(
                "{SESSION_START}: with a NULL max_span a gap is required, or every partition is one endless session"
            );
        }
        Ok(Box::new(SessionEvaluator::new(
            SessionRule::new(unit, max_span, gap),
            args.input_fields()[0].data_type().clone(),
        )))
    }
}

/// Converts a constant span argument to nanoseconds; `None` for NULL.
fn span_nanos(value: &ScalarValue, name: &str) -> Result<Option<i64>> {
    let nanos = match value {
        v if v.is_null() => return Ok(None),
        ScalarValue::IntervalMonthDayNano(Some(v)) => {
            if v.months != 0 {
                return exec_err!(
                    "{SESSION_START}: {name} cannot be given in months or years (they have no fixed length); use days or hours"
                );
            }
            (v.days as i128) * 86_400_000_000_000 + v.nanoseconds as i128
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            (v.days as i128) * 86_400_000_000_000 + (v.milliseconds as i128) * 1_000_000
        }
        ScalarValue::DurationSecond(Some(v)) => *v as i128 * 1_000_000_000,
        ScalarValue::DurationMillisecond(Some(v)) => *v as i128 * 1_000_000,
        ScalarValue::DurationMicrosecond(Some(v)) => *v as i128 * 1_000,
        ScalarValue::DurationNanosecond(Some(v)) => *v as i128,
        other => {
            return exec_err!(
                "{SESSION_START}: {name} must be an interval such as INTERVAL '24 hours', got {}",
                other.data_type()
            )
        }
    };
    if nanos <= 0 {
        return exec_err!("{SESSION_START}: {name} must be positive, got {value}");
    }
    Ok(Some(i64::try_from(nanos).unwrap_or(i64::MAX)))
}

/// The session rule in the timestamp's own ticks.
///
/// Spans are rounded **up** to whole ticks: for integer tick differences `d`,
/// `d * k < s` holds exactly when `d < ceil(s / k)`, so the comparisons stay
/// exact whatever the unit (the same holds for `>=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRule {
    max_span: Option<i64>,
    gap: Option<i64>,
}

impl SessionRule {
    /// A rule for timestamps of `unit`, spans given in nanoseconds.
    pub fn new(unit: TimeUnit, max_span_nanos: Option<i64>, gap_nanos: Option<i64>) -> Self {
        let k = timestamps::nanos_per_tick(unit);
        let ticks = |n: i64| n / k + i64::from(n % k != 0);
        Self {
            max_span: max_span_nanos.map(ticks),
            gap: gap_nanos.map(ticks),
        }
    }
}

/// The state carried from row to row (and so from batch to batch).
#[derive(Debug, Default, Clone, Copy)]
struct SessionState {
    start: i64,
    last: i64,
    started: bool,
}

impl SessionState {
    /// Feeds one non-null timestamp; returns its session start.
    #[inline]
    fn step(&mut self, rule: &SessionRule, t: i64) -> Result<i64> {
        if !self.started {
            self.started = true;
            self.start = t;
            self.last = t;
            return Ok(t);
        }
        if t < self.last {
            return exec_err!(
                "{SESSION_START}: rows are not in ascending ts order within a partition; \
                 call it as session_start(ts) OVER (PARTITION BY user_id ORDER BY ts)"
            );
        }
        // `t >= start` holds here, so the subtraction only overflows for spans
        // wider than the whole i64 range: treat that as "inside the span".
        let past_span = rule
            .max_span
            .is_some_and(|s| t.checked_sub(self.start).is_some_and(|d| d >= s));
        let past_gap = rule
            .gap
            .is_some_and(|g| t.checked_sub(self.last).is_some_and(|d| d >= g));
        if past_span || past_gap {
            self.start = t;
        }
        self.last = t;
        Ok(self.start)
    }
}

/// Reference implementation of the rule over one partition's timestamps,
/// already sorted ascending (NULLs anywhere). Used by the evaluator's buffered
/// path and by tests as the oracle's building block.
pub fn session_starts(rule: &SessionRule, ts: &[Option<i64>]) -> Result<Vec<Option<i64>>> {
    let mut state = SessionState::default();
    ts.iter()
        .map(|t| t.map(|t| state.step(rule, t)).transpose())
        .collect()
}

/// Per-partition evaluator: streams row by row, carrying [`SessionState`].
#[derive(Debug)]
pub struct SessionEvaluator {
    rule: SessionRule,
    state: SessionState,
    out_type: DataType,
}

impl SessionEvaluator {
    fn new(rule: SessionRule, out_type: DataType) -> Self {
        Self {
            rule,
            state: SessionState::default(),
            out_type,
        }
    }

    fn scalar(&self, v: Option<i64>) -> ScalarValue {
        match &self.out_type {
            DataType::Timestamp(unit, tz) => timestamps::scalar(v, *unit, tz.clone()),
            // `field` only admits timestamps.
            _ => ScalarValue::Null,
        }
    }
}

/// The i64 ticks and validity of any timestamp array.
fn ticks(array: &ArrayRef) -> Result<(&ScalarBuffer<i64>, Option<&NullBuffer>)> {
    match timestamps::ticks(array) {
        Some(parts) => Ok(parts),
        None => exec_err!(
            "{SESSION_START}: expected a timestamp column, got {}",
            array.data_type()
        ),
    }
}

impl PartitionEvaluator for SessionEvaluator {
    /// Streaming path: called once per row, in order, by `BoundedWindowAggExec`.
    /// Only the current row is needed (`get_range` default), so every earlier
    /// row can be pruned from the operator's buffer.
    fn evaluate(&mut self, values: &[ArrayRef], range: &Range<usize>) -> Result<ScalarValue> {
        let idx = range.end - 1;
        let (vals, nulls) = ticks(&values[0])?;
        if nulls.is_some_and(|n| n.is_null(idx)) {
            return Ok(self.scalar(None));
        }
        let start = self.state.step(&self.rule, vals[idx])?;
        Ok(self.scalar(Some(start)))
    }

    /// Buffered path: the same state machine over a whole partition at once.
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let (vals, nulls) = ticks(&values[0])?;
        let mut out = Vec::with_capacity(num_rows);
        for (i, &t) in vals.iter().enumerate().take(num_rows) {
            if nulls.is_some_and(|n| n.is_null(i)) {
                out.push(0);
            } else {
                out.push(self.state.step(&self.rule, t)?);
            }
        }
        let ints = Int64Array::new(out.into(), nulls.cloned());
        let data = ints
            .into_data()
            .into_builder()
            .data_type(self.out_type.clone())
            .build()?;
        Ok(make_array(data))
    }

    fn supports_bounded_execution(&self) -> bool {
        true
    }

    /// The result for a row depends only on that row and the rows before it,
    /// so the operator may answer a row as soon as it arrives.
    fn is_causal(&self) -> bool {
        true
    }

    fn uses_window_frame(&self) -> bool {
        false
    }

    fn include_rank(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::TimestampMicrosecondType;

    const H: i64 = 3_600_000_000; // one hour in microseconds

    fn rule(span_h: Option<i64>, gap_h: Option<i64>) -> SessionRule {
        SessionRule::new(
            TimeUnit::Microsecond,
            span_h.map(|h| h * 3_600_000_000_000),
            gap_h.map(|h| h * 3_600_000_000_000),
        )
    }

    fn eval_all(rule: SessionRule, ts: Vec<Option<i64>>) -> Vec<Option<i64>> {
        let dt = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let mut ev = SessionEvaluator::new(rule, dt.clone());
        let arr: ArrayRef =
            Arc::new(TimestampMicrosecondArray::from(ts.clone()).with_timezone("UTC"));
        let out = ev.evaluate_all(&[arr], ts.len()).unwrap();
        assert_eq!(out.data_type(), &dt);
        out.as_primitive::<TimestampMicrosecondType>()
            .iter()
            .collect()
    }

    fn eval_rows(rule: SessionRule, ts: Vec<Option<i64>>) -> Vec<Option<i64>> {
        let dt = DataType::Timestamp(TimeUnit::Microsecond, None);
        let mut ev = SessionEvaluator::new(rule, dt);
        let arr: ArrayRef = Arc::new(TimestampMicrosecondArray::from(ts.clone()));
        (0..ts.len())
            .map(|i| {
                match ev
                    .evaluate(std::slice::from_ref(&arr), &(i..i + 1))
                    .unwrap()
                {
                    ScalarValue::TimestampMicrosecond(v, _) => v,
                    other => panic!("unexpected {other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn fixed_span_is_not_extended_by_activity() {
        let ts = vec![
            Some(0),
            Some(10 * H),
            Some(23 * H),
            Some(24 * H),
            Some(30 * H),
        ];
        let want = vec![Some(0), Some(0), Some(0), Some(24 * H), Some(24 * H)];
        assert_eq!(eval_all(rule(Some(24), None), ts.clone()), want);
        assert_eq!(eval_rows(rule(Some(24), None), ts), want);
    }

    #[test]
    fn action_exactly_at_end_starts_next_session() {
        let ts = vec![Some(5), Some(5 + 24 * H - 1), Some(5 + 24 * H)];
        assert_eq!(
            eval_all(rule(Some(24), None), ts),
            vec![Some(5), Some(5), Some(5 + 24 * H)]
        );
    }

    #[test]
    fn nulls_pass_through_without_touching_state() {
        let ts = vec![Some(0), None, Some(25 * H), None];
        let want = vec![Some(0), None, Some(25 * H), None];
        assert_eq!(eval_all(rule(Some(24), None), ts.clone()), want);
        assert_eq!(eval_rows(rule(Some(24), None), ts), want);
    }

    #[test]
    fn gap_rule_splits_inside_the_span() {
        let ts = vec![Some(0), Some(H), Some(4 * H), Some(5 * H)];
        assert_eq!(
            eval_all(rule(Some(24), Some(3)), ts),
            vec![Some(0), Some(0), Some(4 * H), Some(4 * H)]
        );
    }

    #[test]
    fn pure_inactivity_sessions() {
        let ts = vec![
            Some(0),
            Some(2 * H),
            Some(4 * H),
            Some(40 * H),
            Some(41 * H),
        ];
        assert_eq!(
            eval_all(rule(None, Some(3)), ts),
            vec![Some(0), Some(0), Some(0), Some(40 * H), Some(40 * H)]
        );
    }

    #[test]
    fn spans_round_up_to_whole_ticks() {
        // 1.5 µs span on microsecond ticks: 1 µs later is inside, 2 µs is not.
        let r = SessionRule::new(TimeUnit::Microsecond, Some(1_500), None);
        assert_eq!(
            session_starts(&r, &[Some(0), Some(1), Some(2)]).unwrap(),
            vec![Some(0), Some(0), Some(2)]
        );
    }

    #[test]
    fn descending_input_is_an_error() {
        let r = rule(Some(24), None);
        let err = session_starts(&r, &[Some(10), Some(5)]).unwrap_err();
        assert!(err.to_string().contains("ascending"), "{err}");
    }

    #[test]
    fn span_arguments_are_validated() {
        use datafusion::arrow::datatypes::IntervalMonthDayNano;
        let month = ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(1, 0, 0)));
        assert!(span_nanos(&month, "max_span")
            .unwrap_err()
            .to_string()
            .contains("months"));
        let zero = ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(0, 0, 0)));
        assert!(span_nanos(&zero, "gap")
            .unwrap_err()
            .to_string()
            .contains("positive"));
        let day = ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(0, 1, 5)));
        assert_eq!(span_nanos(&day, "gap").unwrap(), Some(86_400_000_000_005));
        assert_eq!(span_nanos(&ScalarValue::Null, "gap").unwrap(), None);
    }
}
