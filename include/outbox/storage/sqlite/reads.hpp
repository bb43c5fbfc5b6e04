#pragma once
/// \file
/// The event reads: find, query pages, stats (from the stats cache), the next wake-up, and the
/// query plans the tests read.

#include <sqlite3.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage.hpp"
#include "outbox/storage/sqlite/entities.hpp"

namespace outbox::detail::sqlite {

struct event_reads : entity_commits {
  using entity_commits::entity_commits;

  result<std::optional<event>> find(event_id id) {
    auto lock = lock_connection();
    find_event.bind(1, id);
    return find_row(find_event, db, "finding an event", [](const statement& s) { return read_event(s); });
  }

  /// The SQL of query(q), with ?1 after_seq, ?2 status, ?3 user, ?4 limit, ?5 entity, ?6 type.
  static std::string query_sql(const event_query& q) {
    // An entity, or else a type: its index holds that field's events in seq order, read from the
    // cursor until the page is full (the other filters on each row). A status and a user: the
    // status index holds the page in seq order. A status that is not completed, for all users:
    // the status index holds a range no longer than the events waiting in that status, which
    // SQLite sorts. Otherwise the events are read in seq order from the cursor until the page is
    // full, which is short for completed events (most of the history) and for the user a device
    // mostly holds; left to itself, SQLite would read every such event through an index and sort
    // them all.
    const char* index = q.entity_id ? " INDEXED BY outbox_events_entity"
                        : q.type    ? " INDEXED BY outbox_events_type"
                        : q.status_is && (q.user_id || *q.status_is != status::completed)
                            ? " INDEXED BY outbox_events_status"
                            : " NOT INDEXED";
    std::string sql = "SELECT " + std::string(event_columns) + " FROM outbox_events" + index + " WHERE seq > ?1";
    if (q.entity_id) sql += " AND entity_id = ?5";
    if (q.type) sql += " AND type = ?6";
    if (q.status_is) sql += " AND status = ?2";
    if (q.user_id) sql += " AND user_id = ?3";
    return sql + " ORDER BY seq LIMIT ?4";
  }

  result<std::vector<event>> query(const event_query& q) {
    auto lock = lock_connection();
    statement s(db, query_sql(q));
    if (s.prepare_error()) return *s.prepare_error();
    s.bind(1, q.after_seq);
    if (q.status_is) s.bind(2, static_cast<int>(*q.status_is));
    if (q.user_id) s.bind(3, *q.user_id);
    s.bind(4, static_cast<std::int64_t>(q.limit));
    if (q.entity_id) s.bind(5, *q.entity_id);
    if (q.type) s.bind(6, *q.type);
    return read_rows(s, db, "querying events", [](const statement& row) { return read_event(row); });
  }

  /// A user's oldest event of `s`, whose ?2 the caller bound (a status; or now, for the oldest
  /// claimable event): its seq, if any.
  result<std::optional<std::int64_t>> oldest_seq(statement& s, std::string_view user) {
    reset_on_exit reset{s};
    s.bind(1, user);
    const int rc = s.step();
    if (rc != SQLITE_ROW) return failure(db, rc, "finding the oldest event");
    if (s.is_null(0)) return std::optional<std::int64_t>();
    return std::optional<std::int64_t>(s.int64(0));
  }

  /// now - created_at of the event `seq`.
  result<std::optional<duration>> age_of(std::optional<std::int64_t> seq, timestamp now) {
    if (!seq) return std::optional<duration>();
    auto& s = created_at_of;
    reset_on_exit reset{s};
    s.bind(1, *seq);
    const int rc = s.step();
    if (rc == SQLITE_ROW) return std::optional<duration>(now - s.time(0));
    if (rc != SQLITE_DONE) return failure(db, rc, "reading an event's creation time");
    return std::optional<duration>();
  }

  result<event_stats> stats(std::optional<std::string_view> user, timestamp now) {
    auto lock = lock_connection();
    event_stats stats;
    counts_by_user scratch;
    auto counts = waiting.current(db, *this, scratch);
    if (!counts) return counts.error();
    const auto pending = static_cast<std::size_t>(status::pending);
    const auto failed = static_cast<std::size_t>(status::failed);
    // The oldest pending, claimable, failed and dead events: the earliest of each user's.
    std::optional<std::int64_t> oldest_pending, oldest_due, oldest_failed, oldest_dead;
    auto earliest = [](std::optional<std::int64_t>& best, std::optional<std::int64_t> seq) {
      if (seq && (!best || *seq < *best)) best = seq;
    };
    auto first_in = [&](std::optional<std::int64_t>& best, std::string_view name, status st) -> result<void> {
      oldest_in_status.bind(2, static_cast<int>(st));
      auto first = oldest_seq(oldest_in_status, name);
      if (!first) return first.error();
      earliest(best, *first);
      return {};
    };
    // One user's row is found; all users' are walked.
    auto row_it = (*counts)->begin(), rows_end = (*counts)->end();
    if (user) std::tie(row_it, rows_end) = (*counts)->equal_range(*user);
    for (; row_it != rows_end; ++row_it) {
      const auto& [name, row] = *row_it;
      for (std::size_t st = 0; st < status_count; ++st)
        stats.counts[st] += static_cast<std::size_t>(std::max<std::int64_t>(row[st], 0));
      for (auto [st, best] : {std::pair{status::pending, &oldest_pending}, std::pair{status::failed, &oldest_failed},
                              std::pair{status::dead, &oldest_dead}}) {
        if (row[static_cast<std::size_t>(st)] <= 0) continue;
        if (auto found = first_in(*best, name, st); !found) return found.error();
      }
      if (row[pending] > 0 || row[failed] > 0) {  // only their lines have a head to claim
        oldest_due_of.bind(2, now);
        auto first = oldest_seq(oldest_due_of, name);
        if (!first) return first.error();
        earliest(oldest_due, *first);
      }
    }
    {
      auto& s = completed_count(user.has_value());
      reset_on_exit reset{s};
      if (user) s.bind(1, *user);
      const int rc = s.step();
      if (rc == SQLITE_ROW) stats.counts[static_cast<std::size_t>(status::completed)] = static_cast<std::size_t>(s.int64(0));
      else if (rc != SQLITE_DONE) return failure(db, rc, "counting completed events");
    }
    for (auto [seq, age] : {std::pair{oldest_pending, &stats.oldest_pending_age},
                            std::pair{oldest_due, &stats.oldest_due_age},
                            std::pair{oldest_failed, &stats.oldest_failed_age},
                            std::pair{oldest_dead, &stats.oldest_dead_age}}) {
      auto found = age_of(seq, now);
      if (!found) return found.error();
      *age = *found;
    }
    return stats;
  }

  result<std::optional<timestamp>> next_wake(std::string_view user, timestamp) {
    auto lock = lock_connection();
    std::optional<timestamp> wake;
    for (auto* s : {&next_retry, &next_lease_end}) {
      reset_on_exit reset_guard{*s};
      if (s == &next_retry) s->bind(1, user);
      const int rc = s->step();
      if (rc != SQLITE_ROW) return failure(db, rc, "reading the next wake-up");
      if (!s->is_null(0)) {
        const timestamp t = s->time(0);
        if (!wake || t < *wake) wake = t;
      }
    }
    return wake;
  }

  std::vector<std::string> explain_stats() {
    auto lock = lock_connection();
    std::vector<std::string> plan;
    for (std::string_view sql : {count_waiting_sql, oldest_in_status_sql,
                                 count_completed.user, count_completed.all, oldest_due_sql}) {
      statement s(db, "EXPLAIN QUERY PLAN " + std::string(sql));
      while (s.step() == SQLITE_ROW) plan.push_back(std::string(sql.substr(0, 40)) + "...: " + s.text(3));
    }
    return plan;
  }

  std::vector<std::string> explain_query(const event_query& q) {
    auto lock = lock_connection();
    std::vector<std::string> plan;
    statement s(db, "EXPLAIN QUERY PLAN " + query_sql(q));
    while (s.step() == SQLITE_ROW) plan.push_back(s.text(3));
    return plan;
  }

  std::vector<std::string> explain_claim() {
    auto lock = lock_connection();
    std::vector<std::string> plan;
    for (std::string_view sql : {ready_heads_sql, block_heads_sql, promote_due_sql, expired_leases_sql,
                                 refresh_line_sql}) {
      statement s(db, "EXPLAIN QUERY PLAN " + std::string(sql));
      while (s.step() == SQLITE_ROW) plan.push_back(s.text(3));
    }
    return plan;
  }
};

}  // namespace outbox::detail::sqlite
