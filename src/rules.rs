//! The spec's rules that the native operators implement, written once: the
//! event kinds, the reject reasons and their order, the showcase channel,
//! the 24 h session span, the rating range and the session status rule
//! (REPORT_SPEC §1, §2, §4, §6).
//!
//! The SQL views in `queries/views/` are the reference definitions of the
//! same rules; `tests` below reads their literal lists and holds them equal
//! to these, so a rule changed in one place and not the other fails the
//! build's tests, and the differential tests compare the operators' rows
//! with the views'.

use std::ops::RangeInclusive;

/// The contract's event table (spec §1).
pub const EVENTS_TABLE: &str = "events";
/// The contract's proactive-message table (spec §1).
pub const MESSAGES_TABLE: &str = "messages";

/// Event types in the spec's order: four customer actions, then the four
/// lifecycle events. A type's position is its [`kind`].
pub const EVENT_TYPES: [&str; 8] = [
    "help_center_visit",
    "article_search",
    "article_view",
    "conversation_started",
    "bot_answer",
    "teammate_reply",
    "conversation_closed",
    "conversation_rated",
];

/// Event kinds as small integers: positions in [`EVENT_TYPES`].
pub mod kind {
    /// `help_center_visit`.
    pub const VISIT: u8 = 0;
    /// `article_search`.
    pub const SEARCH: u8 = 1;
    /// `article_view`.
    pub const VIEW: u8 = 2;
    /// `conversation_started`: the last customer action kind.
    pub const STARTED: u8 = 3;
    /// `bot_answer`: the first lifecycle kind.
    pub const BOT_ANSWER: u8 = 4;
    /// `teammate_reply`.
    pub const REPLY: u8 = 5;
    /// `conversation_closed`.
    pub const CLOSED: u8 = 6;
    /// `conversation_rated`.
    pub const RATED: u8 = 7;
    /// A row removed as a repeat of its event_id (never in the data).
    pub const DELETED: u8 = u8::MAX;
}

/// Whether a kind is a customer action (starts and fills sessions).
pub fn is_action(k: u8) -> bool {
    k <= kind::STARTED
}

/// Whether a kind carries a conversation (`conversation_started` and the
/// lifecycle events): such a row without `conversation_id` is rejected.
pub fn needs_conversation(k: u8) -> bool {
    (kind::STARTED..=kind::RATED).contains(&k)
}

/// Reject reasons, in the spec's order: a row with several problems gets
/// the first (§1, §4 `data_quality`).
pub const REJECT_REASONS: [&str; 7] = [
    "null_event_id",
    "null_user_id",
    "null_ts",
    "null_event_type",
    "unknown_event_type",
    "missing_conversation_id",
    "invalid_rating",
];

/// Rows of this channel are set aside before anything else (§1).
pub const SHOWCASE_CHANNEL: &str = "content_showcase";

/// Valid ratings; any other value rejects the row whatever its type.
pub const RATINGS: RangeInclusive<i64> = 1..=5;

/// A session covers `[start, start + SESSION_SECONDS)` (§2).
pub const SESSION_SECONDS: i64 = 86_400;

/// The `actor` of a close that makes a conversation automated (§2).
pub const BOT_ACTOR: &str = "bot";

/// The kind of an event type's bytes.
#[inline]
pub fn kind_of(s: &[u8]) -> Option<u8> {
    // One comparison per row: the types' lengths tell them apart but for
    // two of 14 bytes, which their first byte does (the test
    // `kind_of_finds_every_type_and_nothing_else` holds this to EVENT_TYPES).
    let k = match (s.len(), s.first()) {
        (17, _) => kind::VISIT,
        (14, Some(b'a')) => kind::SEARCH,
        (14, _) => kind::REPLY,
        (12, _) => kind::VIEW,
        (20, _) => kind::STARTED,
        (10, _) => kind::BOT_ANSWER,
        (19, _) => kind::CLOSED,
        (18, _) => kind::RATED,
        _ => return None,
    };
    (EVENT_TYPES[k as usize].as_bytes() == s).then_some(k)
}

/// A row's reject reason (index into [`REJECT_REASONS`]) or its kind. The
/// checks run in the reasons' order.
#[inline]
pub fn classify(
    id_null: bool,
    user_null: bool,
    ts_null: bool,
    ty: Option<&[u8]>,
    conv_null: bool,
    rating: Option<i64>,
) -> Result<u8, usize> {
    if id_null {
        return Err(0);
    }
    if user_null {
        return Err(1);
    }
    if ts_null {
        return Err(2);
    }
    let Some(ty) = ty else { return Err(3) };
    let Some(k) = kind_of(ty) else {
        return Err(4);
    };
    if needs_conversation(k) && conv_null {
        return Err(5);
    }
    if matches!(rating, Some(r) if !RATINGS.contains(&r)) {
        return Err(6);
    }
    Ok(k)
}

/// A session's status (§2 "Session status").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// A human conversation after a self-serve attempt.
    HumanAfterSelfServe,
    /// A human conversation with no self-serve attempt before it.
    HumanFromStart,
    /// No human conversation; an article view or an automated one.
    SelfServeResolved,
    /// Anything else.
    Stopped,
}

/// The statuses' names, in [`Status`] order.
pub const STATUSES: [&str; 4] = [
    "human_after_self_serve",
    "human_from_start",
    "self_serve_resolved",
    "stopped",
];

impl Status {
    /// The name the `sessions` view gives it.
    pub fn as_str(self) -> &'static str {
        STATUSES[self as usize]
    }
}

/// What the status of one session depends on. Times are in the ticks of
/// `events.ts`; `None` where the session has no such event.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionSummary {
    /// Its article views.
    pub article_views: i64,
    /// Its automated conversations.
    pub automated: i64,
    /// The earliest article_view or article_search.
    pub first_self_serve: Option<i64>,
    /// The earliest bot answer of any of its conversations.
    pub first_bot_answer: Option<i64>,
    /// H, the earliest-started human conversation: (started_at, first
    /// reply).
    pub first_human: Option<(i64, Option<i64>)>,
}

impl SessionSummary {
    /// The status rule of §2: with H, a self-serve attempt before it (an
    /// article view or search before H started, or a bot answer before H's
    /// first reply, any bot answer when H has none) makes it
    /// human_after_self_serve, else human_from_start; without H, an article
    /// view or an automated conversation makes it self_serve_resolved, else
    /// stopped.
    pub fn status(&self) -> Status {
        match self.first_human {
            Some((started, reply)) => {
                let searched = self.first_self_serve.is_some_and(|t| t < started);
                let bot = self
                    .first_bot_answer
                    .is_some_and(|b| reply.is_none_or(|r| b < r));
                if searched || bot {
                    Status::HumanAfterSelfServe
                } else {
                    Status::HumanFromStart
                }
            }
            None if self.article_views > 0 || self.automated > 0 => Status::SelfServeResolved,
            None => Status::Stopped,
        }
    }
}

/// Whether a conversation is automated (§2): at least one bot answer, no
/// teammate reply, and closed by `bot` (its latest close's actor).
pub fn automated(bot_answers: u32, replies: u32, closed_by_bot: bool) -> bool {
    bot_answers > 0 && replies == 0 && closed_by_bot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_of_finds_every_type_and_nothing_else() {
        for (k, t) in EVENT_TYPES.iter().enumerate() {
            assert_eq!(kind_of(t.as_bytes()), Some(k as u8), "{t}");
            let mut other = t.as_bytes().to_vec();
            other[t.len() - 1] ^= 1;
            assert_eq!(kind_of(&other), None);
        }
        for other in ["", "page_view", "Article_search", "teammate_replY"] {
            assert_eq!(kind_of(other.as_bytes()), None, "{other}");
        }
    }

    const VIEWS: &str = concat!(
        include_str!("../queries/views/01_validated_events.sql"),
        include_str!("../queries/views/03_event_checks.sql"),
        include_str!("../queries/views/07_session_actions.sql"),
        include_str!("../queries/views/08_conversation_facts.sql"),
        include_str!("../queries/views/09_conversations.sql"),
        include_str!("../queries/views/10_sessions.sql"),
    );

    /// The quoted strings of the first `IN (...)` list after `after` in
    /// `sql`.
    fn in_list(sql: &str, after: &str) -> Vec<String> {
        let at = sql
            .find(after)
            .unwrap_or_else(|| panic!("{after:?} not found"));
        let rest = &sql[at..];
        let open = rest.find("IN (").expect("an IN list") + 4;
        let close = open + rest[open..].find(')').expect("closed");
        quoted(&rest[open..close])
    }

    fn quoted(s: &str) -> Vec<String> {
        s.split('\'')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_views_list_the_same_event_types() {
        let v = include_str!("../queries/views/01_validated_events.sql");
        assert_eq!(in_list(v, "AND event_type IN"), EVENT_TYPES);
        assert_eq!(in_list(v, "WHEN event_type NOT IN"), EVENT_TYPES);
        // the types that need a conversation_id
        let needing: Vec<&str> = EVENT_TYPES
            .iter()
            .enumerate()
            .filter(|(k, _)| needs_conversation(*k as u8))
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(in_list(v, "WHEN event_type IN"), needing);
        // the types that do not
        let free: Vec<&str> = EVENT_TYPES
            .iter()
            .enumerate()
            .filter(|(k, _)| !needs_conversation(*k as u8))
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(in_list(v, "OR event_type IN"), free);
        let actions: Vec<&str> = EVENT_TYPES
            .iter()
            .enumerate()
            .filter(|(k, _)| is_action(*k as u8))
            .map(|(_, t)| *t)
            .collect();
        let s = include_str!("../queries/views/07_session_actions.sql");
        assert_eq!(in_list(s, "WHERE event_type IN"), actions);
        let f = include_str!("../queries/views/08_conversation_facts.sql");
        let conversation: Vec<&str> = EVENT_TYPES[kind::STARTED as usize..].to_vec();
        assert_eq!(in_list(f, "WHERE event_type IN"), conversation);
    }

    #[test]
    fn the_views_list_the_same_reasons_in_the_same_order() {
        let v = include_str!("../queries/views/01_validated_events.sql");
        let thens: Vec<String> = v
            .lines()
            .filter_map(|l| l.split_once(" THEN '").map(|(_, r)| r))
            .map(|r| r.split('\'').next().unwrap_or_default().to_string())
            .collect();
        assert_eq!(thens, REJECT_REASONS);
        let checks = include_str!("../queries/views/03_event_checks.sql");
        let values = &checks[checks.find("VALUES").expect("reasons")..];
        let values = &values[..values.find("),\n-- check_keys").unwrap_or(values.len())];
        assert_eq!(quoted(values), REJECT_REASONS);
        let counts = include_str!("../queries/views/13_event_counts.sql");
        for (i, reason) in REJECT_REASONS.iter().enumerate() {
            assert!(
                counts.contains(&format!("reject_reason = '{reason}'")),
                "{reason} in 13_event_counts.sql"
            );
            assert!(
                checks.contains(&format!("WHEN '{reason}' THEN arrow_cast({}, ", i + 1)),
                "{reason}'s key in 03_event_checks.sql"
            );
        }
        let dq = include_str!("../queries/report/06_data_quality.sql");
        let listed: Vec<String> = dq
            .lines()
            .filter(|l| l.contains("'rows_rejected'"))
            .flat_map(|l| quoted(l).into_iter().skip(1))
            .collect();
        assert_eq!(listed, REJECT_REASONS);
    }

    #[test]
    fn the_views_use_the_same_constants_and_statuses() {
        assert!(VIEWS.contains(&format!(
            "WHERE channel IS DISTINCT FROM '{SHOWCASE_CHANNEL}'"
        )));
        assert!(VIEWS.contains(&format!(
            "rating BETWEEN {} AND {}",
            RATINGS.start(),
            RATINGS.end()
        )));
        assert!(VIEWS.contains(&format!("INTERVAL '{SESSION_SECONDS} seconds'")));
        assert!(VIEWS.contains(&format!("closed_by = '{BOT_ACTOR}'")));
        let sessions = include_str!("../queries/views/10_sessions.sql");
        let body = &sessions[sessions.find("CREATE OR REPLACE VIEW").expect("view")..];
        let mut named: Vec<String> = body
            .lines()
            .filter(|l| l.contains("THEN '") || l.trim_start().starts_with("ELSE '"))
            .flat_map(quoted)
            .collect();
        named.dedup();
        assert_eq!(named, STATUSES);
        let udwf = include_str!("functions/session_start.rs");
        assert!(
            udwf.contains("SESSION_SECONDS"),
            "the UDWF uses the same span"
        );
    }

    #[test]
    fn reasons_in_spec_order() {
        assert_eq!(classify(true, true, true, None, true, Some(9)), Err(0));
        assert_eq!(classify(false, true, true, None, true, None), Err(1));
        assert_eq!(classify(false, false, true, None, true, None), Err(2));
        assert_eq!(classify(false, false, false, None, true, None), Err(3));
        assert_eq!(
            classify(false, false, false, Some(b"x"), true, None),
            Err(4)
        );
        assert_eq!(
            classify(false, false, false, Some(b"bot_answer"), true, None),
            Err(5)
        );
        assert_eq!(
            classify(false, false, false, Some(b"article_view"), true, Some(0)),
            Err(6)
        );
        assert_eq!(
            classify(false, false, false, Some(b"article_view"), true, Some(5)),
            Ok(kind::VIEW)
        );
    }

    #[test]
    fn status_rule() {
        let base = SessionSummary::default();
        assert_eq!(base.status(), Status::Stopped);
        let viewed = SessionSummary {
            article_views: 1,
            ..base
        };
        assert_eq!(viewed.status(), Status::SelfServeResolved);
        let human = SessionSummary {
            first_human: Some((10, Some(20))),
            ..base
        };
        assert_eq!(human.status(), Status::HumanFromStart);
        let searched_before = SessionSummary {
            first_self_serve: Some(9),
            ..human
        };
        assert_eq!(searched_before.status(), Status::HumanAfterSelfServe);
        let searched_at = SessionSummary {
            first_self_serve: Some(10),
            ..human
        };
        assert_eq!(searched_at.status(), Status::HumanFromStart);
        let bot_before_reply = SessionSummary {
            first_bot_answer: Some(19),
            ..human
        };
        assert_eq!(bot_before_reply.status(), Status::HumanAfterSelfServe);
        let no_reply = SessionSummary {
            first_human: Some((10, None)),
            first_bot_answer: Some(50),
            ..base
        };
        assert_eq!(no_reply.status(), Status::HumanAfterSelfServe);
    }
}
