//! What each metric of the report counts, in a support team's words: the
//! definitions the HTML report links every metric name to. They say the
//! same as docs/METRICS.md, shortened; the rules themselves are in
//! `queries/` and `src/rules.rs`.

/// The definition of `metric` (a metric of the report), one or two
/// sentences; empty for a name that is not one.
pub fn definition(metric: &str) -> &'static str {
    match metric {
        "proactive_messages" => {
            "Proactive deliveries sent in the period, after the report's tag, content type \
             and sender filters."
        }
        "people_seeking_support" => "Customers with at least one session in the period.",
        "people_tried_self_serve" => {
            "Customers who viewed or searched articles, or got a bot answer, in a session of \
             the period; customers all of whose sessions stopped are left out."
        }
        "people_resolved_self_serve" => {
            "Customers with at least one session resolved by articles or bots."
        }
        "people_human_after_self_serve" => {
            "Customers with at least one session that reached a teammate after trying \
             self-serve."
        }
        "people_human_from_start" => {
            "Customers with at least one session that went straight to a teammate."
        }
        "people_stopped" => {
            "Customers all of whose sessions in the period stopped: they looked, found nothing \
             to read and did not ask. They are in no other group."
        }
        "sessions_total" => {
            "Sessions starting in the period. A session is a customer's 24 hours of looking \
             for help from their first help-seeking action; it belongs to the period in which \
             it starts."
        }
        "sessions_self_serve_resolved" => {
            "Sessions with no teammate conversation in which the customer viewed an article \
             or a bot resolved their conversation."
        }
        "sessions_human_supported" => {
            "Sessions that reached a teammate: human after self-serve plus human from start."
        }
        "sessions_human_after_self_serve" => {
            "Sessions whose first teammate conversation came after an article view or search, \
             or after a bot answer that came before the teammate's first reply."
        }
        "sessions_human_from_start" => {
            "Sessions that reached a teammate with no self-serve attempt before."
        }
        "sessions_stopped" => {
            "Sessions with only Help Center visits and searches: no article read, no \
             conversation."
        }
        "messages_delivered" => "Proactive deliveries sent in the period (filters applied).",
        "messages_opened" => "Of the deliveries sent in the period, those ever opened.",
        "messages_clicked" => "Of the deliveries sent in the period, those ever clicked.",
        "messages_reacted" => "Of the deliveries sent in the period, those ever reacted to.",
        "open_rate" => "Opened deliveries divided by deliveries sent in the period.",
        "click_rate" => "Clicked deliveries divided by deliveries sent in the period.",
        "reaction_rate" => "Reacted-to deliveries divided by deliveries sent in the period.",
        "self_serve_resolution_rate" => {
            "Self-serve resolved sessions divided by resolved plus human sessions; stopped \
             sessions are left out."
        }
        "article_views" => "Article views in the sessions of the period.",
        "article_views_resolved" => {
            "Article views after which the customer started no conversation in that session \
             (a conversation started at the same instant does not count)."
        }
        "articles_resolution_rate" => "Resolved article views divided by article views.",
        "automated_resolutions" => {
            "Conversations a bot resolved: a bot answered, no teammate replied, and the bot \
             closed it."
        }
        "sessions_with_bot_answer" => "Sessions with a conversation a bot answered.",
        "sessions_automated_resolved" => "Sessions with a conversation a bot resolved.",
        "automated_resolution_rate" => {
            "Sessions with a bot-resolved conversation divided by sessions with a bot answer."
        }
        "conversations" => {
            "Human conversations (not resolved by a bot) started in sessions of the segment's \
             status."
        }
        "rated_conversations" => "Those human conversations with a rating (the latest counts).",
        "avg_rating" => "The mean rating (1 to 5) of the rated human conversations.",
        "csat" => "The share of rated human conversations rated 4 or 5.",
        "median_first_response_s" => {
            "The median time from a human conversation's start to the first teammate reply, \
             over the conversations replied to."
        }
        "median_time_to_close_s" => {
            "The median time from a human conversation's start to its last close, over the \
             closed conversations."
        }
        "rows_read" => "Rows in each input table, content showcase rows included.",
        "rows_rejected" => {
            "Rows left out, by the first rule they fail: missing ids, user, time or type, an \
             unknown type, a conversation event without a conversation, a rating outside 1 to 5."
        }
        "duplicate_events" => "Valid rows dropped as repeats of an event id.",
        "duplicate_messages" => "Rows dropped as repeats of a message id.",
        "orphan_lifecycle_events" => {
            "Replies, closes, ratings and bot answers of conversations never started."
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_of_the_report_has_a_definition() {
        for m in crate::report::detail::METRICS {
            assert!(
                !definition(m.metric).is_empty(),
                "{} has no definition",
                m.metric
            );
        }
    }
}
