#pragma once
/// \file
/// The event reads: find, pages of events, stats, the next wake-up.

#include <cstddef>
#include <optional>
#include <string_view>
#include <vector>

#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage.hpp"
#include "outbox/storage/postgres/link.hpp"
#include "outbox/storage/postgres/maintenance.hpp"

namespace outbox::detail::postgres {

[[nodiscard]] inline result<std::optional<event>> find_event(link& l, const event_id& id) {
  auto r = l.run_one({l.sql.find_event, {text_of(id)}}, "finding an event");
  if (!r) return r.error();
  if (r->rows() == 0) return std::optional<event>();
  return std::optional<event>(read_event(*r, 0));
}

[[nodiscard]] inline result<std::vector<event>> query_events(link& l, const event_query& q) {
  param st = q.status_is ? param(text_of(std::int64_t{static_cast<int>(*q.status_is)})) : param();
  param user = q.user_id ? param(*q.user_id) : param();
  std::vector<param> values{text_of(static_cast<std::int64_t>(q.after_seq)), std::move(st), std::move(user),
                            text_of(static_cast<std::int64_t>(q.limit))};
  // The statement of the query's indexed filter (statements.hpp): the entity's index also serves
  // a type asked beside it.
  const std::string* sql = &l.sql.query_events;
  if (q.entity_id) {
    sql = &l.sql.query_events_of_entity;
    values.emplace_back(*q.entity_id);
    values.push_back(q.type ? param(*q.type) : param());
  } else if (q.type) {
    sql = &l.sql.query_events_of_type;
    values.emplace_back(*q.type);
  }
  auto r = l.run_one({*sql, std::move(values)}, "querying events");
  if (!r) return r.error();
  std::vector<event> out;
  out.reserve(static_cast<std::size_t>(r->rows()));
  for (int row = 0; row < r->rows(); ++row) out.push_back(read_event(*r, row));
  return out;
}

/// Counts by status and the ages of the oldest pending, claimable, failed and dead events: one
/// round trip.
[[nodiscard]] inline result<event_stats> event_statistics(link& l, std::optional<std::string_view> user,
                                                          timestamp now) {
  auto oldest = [&](status s) -> query {
    return {l.sql.oldest_with_status, {optional_text(user), text_of(std::int64_t{static_cast<int>(s)})}};
  };
  const query queries[] = {{l.sql.count_by_status, {optional_text(user)}},
                           oldest(status::pending),
                           {l.sql.oldest_due, {optional_text(user), text_of(now)}},
                           oldest(status::failed),
                           oldest(status::dead)};
  auto r = l.run(queries, "reading statistics");
  if (!r) return r.error();
  event_stats stats;
  const result_handle& counts = (*r)[0];
  for (int row = 0; row < counts.rows(); ++row) {
    const auto st = static_cast<std::size_t>(counts.integer(row, 0));
    if (st < status_count) stats.counts[st] = static_cast<std::size_t>(counts.integer(row, 1));
  }
  if ((*r)[1].rows() > 0) stats.oldest_pending_age = now - (*r)[1].time(0, 0);
  if ((*r)[2].rows() > 0) stats.oldest_due_age = now - (*r)[2].time(0, 0);
  if ((*r)[3].rows() > 0) stats.oldest_failed_age = now - (*r)[3].time(0, 0);
  if ((*r)[4].rows() > 0) stats.oldest_dead_age = now - (*r)[4].time(0, 0);
  return stats;
}

[[nodiscard]] inline result<std::optional<timestamp>> next_wake_of(link& l, std::string_view user) {
  auto r = l.run_one({l.sql.next_wake, {std::string(user)}}, "reading the next wake-up");
  if (!r) return r.error();
  if (r->rows() == 0 || r->is_null(0, 0)) return std::optional<timestamp>();
  return std::optional<timestamp>(r->time(0, 0));
}

}  // namespace outbox::detail::postgres
