//! The derived views, each defined by one SQL file in `queries/views/` and
//! compiled into the binary so a deployed job cannot drift from its queries.
//!
//! Views are registered in dependency order. DataFusion resolves the tables a
//! view reads when the view is created, so a caller can put a materialized
//! table in place of any view (the report does this with `session_actions`,
//! `conversations` and `sessions`, so sessionization runs once) and the views
//! created after it read the table instead.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::datasource::TableProvider;
use datafusion::prelude::SessionContext;

use crate::error::Result;

/// `(name, sql)` in dependency order.
pub const EVENT_VIEWS: &[(&str, &str)] = &[
    (
        "validated_events",
        include_str!("../queries/views/01_validated_events.sql"),
    ),
    (
        "rejected_events",
        include_str!("../queries/views/02_rejected_events.sql"),
    ),
    (
        "clean_events",
        include_str!("../queries/views/03_clean_events.sql"),
    ),
    (
        "session_actions",
        include_str!("../queries/views/04_session_actions.sql"),
    ),
    (
        "conversation_starts",
        include_str!("../queries/views/05_conversation_starts.sql"),
    ),
    (
        "conversations",
        include_str!("../queries/views/06_conversations.sql"),
    ),
    ("sessions", include_str!("../queries/views/07_sessions.sql")),
    (
        "orphan_lifecycle_events",
        include_str!("../queries/views/08_orphan_lifecycle_events.sql"),
    ),
];

/// Views over the `messages` table.
pub const MESSAGE_VIEWS: &[(&str, &str)] = &[(
    "clean_messages",
    include_str!("../queries/views/09_clean_messages.sql"),
)];

/// Registers the views over the `messages` table.
pub async fn register_message_views(ctx: &SessionContext) -> Result<()> {
    for (_name, sql) in MESSAGE_VIEWS {
        ctx.sql(sql).await?;
    }
    Ok(())
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
    for (name, sql) in EVENT_VIEWS {
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
