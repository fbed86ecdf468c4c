//! The derived views, each defined by one SQL file in `queries/views/` and
//! compiled into the binary so a deployed job cannot drift from its queries.
//!
//! Views are registered in dependency order. DataFusion resolves the tables a
//! view reads when the view is created, so a caller can put a materialized
//! table in place of any view (the report does this with `event_checks`,
//! `duplicate_winners`, `conversation_facts`, `session_actions`,
//! `conversations` and `sessions`, so each runs once) and the views created
//! after it read the table instead.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::datasource::TableProvider;
use datafusion::prelude::SessionContext;

use crate::error::Result;

/// `(name, sql)` in dependency order.
pub const EVENT_VIEWS: &[(&str, &str)] = &[
    (
        "validated_events",
        include_str!("../../queries/views/01_validated_events.sql"),
    ),
    (
        "rejected_events",
        include_str!("../../queries/views/02_rejected_events.sql"),
    ),
    (
        "event_checks",
        include_str!("../../queries/views/03_event_checks.sql"),
    ),
    (
        "event_copies",
        include_str!("../../queries/views/04_event_copies.sql"),
    ),
    (
        "duplicate_winners",
        include_str!("../../queries/views/05_duplicate_winners.sql"),
    ),
    (
        "clean_events",
        include_str!("../../queries/views/06_clean_events.sql"),
    ),
    (
        "session_actions",
        include_str!("../../queries/views/07_session_actions.sql"),
    ),
    (
        "conversation_facts",
        include_str!("../../queries/views/08_conversation_facts.sql"),
    ),
    (
        "conversations",
        include_str!("../../queries/views/09_conversations.sql"),
    ),
    (
        "sessions",
        include_str!("../../queries/views/10_sessions.sql"),
    ),
    (
        "orphan_lifecycle_events",
        include_str!("../../queries/views/11_orphan_lifecycle_events.sql"),
    ),
    (
        "session_conversations",
        include_str!("../../queries/views/12_session_conversations.sql"),
    ),
    (
        "event_counts",
        include_str!("../../queries/views/13_event_counts.sql"),
    ),
];

/// Views over the `messages` table.
pub const MESSAGE_VIEWS: &[(&str, &str)] = &[
    (
        "message_checks",
        include_str!("../../queries/views/14_message_checks.sql"),
    ),
    (
        "message_copies",
        include_str!("../../queries/views/15_message_copies.sql"),
    ),
    (
        "clean_messages",
        include_str!("../../queries/views/16_clean_messages.sql"),
    ),
];

/// Registers the views over the `messages` table.
pub async fn register_message_views(ctx: &SessionContext) -> Result<()> {
    register_views_with(ctx, MESSAGE_VIEWS, &HashMap::new()).await
}

/// Registers every view over the `events` table.
pub async fn register_event_views(ctx: &SessionContext) -> Result<()> {
    register_event_views_with(ctx, &HashMap::new()).await
}

/// Registers the views, except that a name found in `tables` is registered as
/// that table instead of its view.
pub async fn register_event_views_with(
    ctx: &SessionContext,
    tables: &HashMap<&str, Arc<dyn TableProvider>>,
) -> Result<()> {
    register_views_with(ctx, EVENT_VIEWS, tables).await
}

/// Registers `views` in order, except that a name found in `tables` is
/// registered as that table instead of its view.
pub async fn register_views_with(
    ctx: &SessionContext,
    views: &[(&str, &str)],
    tables: &HashMap<&str, Arc<dyn TableProvider>>,
) -> Result<()> {
    for (name, sql) in views {
        match tables.get(name) {
            Some(t) => {
                ctx.deregister_table(*name)?;
                ctx.register_table(*name, Arc::clone(t))?;
            }
            None => {
                ctx.sql(sql).await?;
            }
        }
    }
    Ok(())
}
