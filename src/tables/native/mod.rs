//! The derived relations of the report as DataFusion operators: `sessions`,
//! `conversations`, `session_conversations` and `event_counts`, computed
//! natively from one scan of `events`, partitioned, counted in the memory
//! pool and spilled when it refuses.
//!
//! The SQL views in `queries/views/` stay the definitions: these operators
//! are a faster way to compute the same rows, and the differential tests
//! (`tests/integration/native.rs`) hold them equal on generated data with
//! every corner of the spec, in one and several partitions, spilled or not,
//! with forced hash collisions.
//!
//! The layers, each a module:
//! * [`crate::rules`]: the spec's constants and rules, written once;
//! * [`intern`]: interned ids and the fixed hashes that route them;
//! * [`segments`], [`store`]: the slim rows a bucket holds, in memory or
//!   spilled;
//! * [`scan`]: the one pass over `events`, rows routed to buckets by key;
//! * [`dedup`]: repeated event_ids, settled exactly;
//! * [`facts`]: conversation facts, by conversation bucket;
//! * [`sessions`]: sessionization and the output rows, by user bucket;
//! * [`tap`]: a full run's fold, routed by the scan;
//! * [`build`]: the steps in order, shared by every relation of a query;
//! * [`node`]: the logical node, its planner, the execution plan and the
//!   views that put them in SQL.

pub mod build;
pub mod dedup;
pub mod facts;
pub mod intern;
pub mod node;
pub mod scan;
pub mod segments;
pub mod sessions;
pub mod store;
pub mod tap;

use std::sync::Arc;

use crate::rules;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

pub use build::{Built, NativeOptions};
pub use node::{install, register_views, NativeNode};

/// Hash maps and sets with a fast fixed hasher (keys here are ids and
/// integers we produce).
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;
/// See [`HashMap`].
pub type HashSet<K> = std::collections::HashSet<K, foldhash::fast::FixedState>;

/// A relation the operators compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Relation {
    /// The `sessions` view (`queries/views/10_sessions.sql`).
    Sessions,
    /// The `conversations` view (`queries/views/09_conversations.sql`).
    Conversations,
    /// The `session_conversations` view: conversations with their
    /// session's status.
    SessionConversations,
    /// The `event_counts` view: one row of data-quality counts.
    EventCounts,
}

impl Relation {
    /// Every relation.
    pub const ALL: [Relation; 4] = [
        Relation::Sessions,
        Relation::Conversations,
        Relation::SessionConversations,
        Relation::EventCounts,
    ];

    /// Its view's name.
    pub fn name(self) -> &'static str {
        match self {
            Relation::Sessions => "sessions",
            Relation::Conversations => "conversations",
            Relation::SessionConversations => "session_conversations",
            Relation::EventCounts => "event_counts",
        }
    }

    /// Its columns, with timestamps of `ts` (the type of `events.ts`).
    pub fn schema(self, ts: &DataType) -> SchemaRef {
        let i = |n: &str| Field::new(n, DataType::Int64, false);
        let t = |n: &str, null: bool| Field::new(n, ts.clone(), null);
        let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
        let fields = match self {
            Relation::Sessions => vec![
                s("user_id", false),
                t("session_start", false),
                t("session_end", false),
                s("status", false),
                Field::new("tried_self_serve", DataType::Boolean, false),
                i("actions"),
                i("help_center_visits"),
                i("article_searches"),
                i("article_views"),
                i("conversation_starts"),
                i("conversations"),
                i("human_conversations"),
                i("automated_conversations"),
                i("conversations_with_bot_answer"),
                s("first_human_conversation_id", true),
                t("first_self_serve_at", true),
                t("last_conversation_started_at", true),
                i("article_views_resolved"),
            ],
            Relation::Conversations | Relation::SessionConversations => {
                let mut f = vec![
                    s("conversation_id", false),
                    s("user_id", false),
                    t("started_at", false),
                    t("session_start", false),
                    t("first_reply_at", true),
                    t("closed_at", true),
                    s("closed_by", true),
                    Field::new("rating", DataType::Int32, true),
                    t("first_bot_answer_at", true),
                    i("bot_answers"),
                    i("teammate_replies"),
                    i("closes"),
                    Field::new("automated", DataType::Boolean, false),
                ];
                if self == Relation::SessionConversations {
                    f.push(s("status", false));
                }
                f
            }
            Relation::EventCounts => std::iter::once(i("rows_read"))
                .chain(rules::REJECT_REASONS.iter().map(|r| i(r)))
                .chain([i("duplicate_events"), i("orphan_lifecycle_events")])
                .collect(),
        };
        Arc::new(Schema::new(fields))
    }

    /// Whether its rows belong to a session (and can be filtered on the
    /// session's start).
    pub fn by_session(self) -> bool {
        self != Relation::EventCounts
    }
}

/// Counts for the `data_quality` section (spec §4).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventCounts {
    /// Rows in `events`, content_showcase rows included.
    pub rows_read: u64,
    /// Rejected rows per reason, in [`rules::REJECT_REASONS`] order.
    pub rejected: [u64; 7],
    /// Valid rows dropped as repeats of an event_id.
    pub duplicate_events: u64,
    /// Valid, deduplicated lifecycle events without a `conversation_started`.
    pub orphan_lifecycle_events: u64,
}
