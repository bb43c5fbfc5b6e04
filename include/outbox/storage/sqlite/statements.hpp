#pragma once
/// \file
/// Every SQL statement the storage prepares, in ONE table: `OUTBOX_SQLITE_STATEMENTS` below
/// declares each as a member of `statements`, prepares it and finalises it. Adding a statement
/// is one line of the table. Also here: the column lists and the readers of their rows, and the
/// named queries whose plans the tests read (explain_claim(), explain_stats(), explain_query()).

#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <string_view>

#include "outbox/entity.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage/sqlite/handle.hpp"

// The column lists as literals, so the table's SQL is built at compile time. #undef at the end.
#define OUTBOX_SQLITE_EVENT_COLUMNS                                                                              \
  "seq, id, type, entity_id, entity_type, ordering_key, user_id, payload, priority, status, attempts, "          \
  "max_attempts, created_at, updated_at, retry_after, completed_at, last_error, remote_id, lease, lease_until"
#define OUTBOX_SQLITE_ENTITY_COLUMNS                                                                             \
  "collection, id, user_id, natural_key, payload, occurred_at, sync, remote_id, sync_error, last_event, version, " \
  "created_at, updated_at"

namespace outbox::detail::sqlite {

inline constexpr std::string_view event_columns = OUTBOX_SQLITE_EVENT_COLUMNS;
inline constexpr std::string_view entity_columns = OUTBOX_SQLITE_ENTITY_COLUMNS;

/// An event row whose columns are `event_columns`, from column `first` on.
inline event read_event(const statement& s, int first = 0) {
  event e;
  e.seq = static_cast<std::uint64_t>(s.int64(first + 0));
  e.id = s.id(first + 1);
  e.type = s.text(first + 2);
  e.entity_id = s.text(first + 3);
  e.entity_type = s.text(first + 4);
  e.ordering_key = s.text(first + 5);
  e.user_id = s.text(first + 6);
  e.payload = s.text(first + 7);
  e.priority = s.integer(first + 8);
  e.status = static_cast<status>(s.integer(first + 9));
  e.attempts = s.integer(first + 10);
  e.max_attempts = s.integer(first + 11);
  e.created_at = s.time(first + 12);
  e.updated_at = s.time(first + 13);
  e.retry_after = s.time(first + 14);
  e.completed_at = s.time(first + 15);
  e.last_error = s.text(first + 16);
  e.remote_id = s.text(first + 17);
  e.lease = static_cast<std::uint64_t>(s.int64(first + 18));
  e.lease_until = s.time(first + 19);
  return e;
}

/// An entity row whose columns are `entity_columns`.
inline entity_record read_entity(const statement& s) {
  entity_record r;
  r.collection = s.text(0);
  r.id = s.text(1);
  r.user_id = s.text(2);
  r.natural_key = s.is_null(3) ? std::string() : s.text(3);
  r.payload = s.text(4);
  r.occurred_at = s.time(5);
  r.sync = static_cast<sync_status>(s.integer(6));
  r.remote_id = s.text(7);
  r.sync_error = s.text(8);
  r.last_event = s.is_null(9) ? event_id{} : s.id(9);
  r.version = static_cast<std::uint64_t>(s.int64(10));
  r.created_at = s.time(11);
  r.updated_at = s.time(12);
  return r;
}

// ---- the named queries -------------------------------------------------------------------------

/// The reads of a claim, in the order it runs them; explain_claim() shows their plans.
// The claim order, stated once in detail/lifecycle.hpp: per user, ready heads by priority
// descending, then append order (seq); a line has at most one event in flight.
// The head's status (pending, or failed and due) comes along for the counts a claim moves.
inline constexpr std::string_view ready_heads_sql =
    "SELECT k.head_seq, e.status FROM outbox_keys k JOIN outbox_events e ON e.seq = k.head_seq "
    "WHERE k.user_id = ?1 AND k.state = 0 ORDER BY k.priority DESC, k.head_seq LIMIT ?2";
inline constexpr std::string_view promote_due_sql =
    "UPDATE outbox_keys SET state = 0 WHERE user_id = ?1 AND state = 1 AND ready_at <= ?2";
// Lease expiry: claims in flight whose lease ended, oldest lease first (the rule on the last
// attempt is lifecycle::lease_expiry).
// Named index: the status index would serve `status = 1` too, but not in lease order.
inline constexpr std::string_view expired_leases_sql =
    "SELECT seq, attempts, max_attempts, user_id, ordering_key, entity_type, entity_id FROM outbox_events "
    "INDEXED BY outbox_events_leases WHERE status = 1 AND lease_until <= ?1 ORDER BY lease_until";
// A line's row re-derived after a change to its event ?3 (claim_engine::refresh states the
// rule). The head is the line's first undelivered event from a floor, read through the line
// index (a seek, then the next entry); its status is spelled as equalities, as an IN list would
// build a temporary b-tree on every run.
#define OUTBOX_SQLITE_LINE_HEAD(floor)                                                               \
  "FROM outbox_events INDEXED BY outbox_events_line WHERE user_id = ?1 AND ordering_key = ?2 AND " \
  "seq >= " floor " AND (status = 0 OR status = 1 OR status = 3) ORDER BY seq LIMIT 1"
// The line's row, in place: the floor is the lower of ?3 and the head the row recorded; the row
// keeps state 2 while the line still has an event in flight (?4: the change may leave one in
// flight, and the row says the line had one), else takes 1 for a failed head (claimable from its
// retry time) or 0. No head, or no row: nothing changes (OR IGNORE skips the row the empty
// subquery would null), and refresh falls back to insert_line_sql.
#define OUTBOX_SQLITE_KEEPS_FLIGHT "(?4 AND outbox_keys.state = 2)"
inline constexpr std::string_view refresh_line_sql =
    "UPDATE OR IGNORE outbox_keys SET (state, priority, head_seq, ready_at) = (SELECT "
    "CASE WHEN " OUTBOX_SQLITE_KEEPS_FLIGHT " THEN 2 WHEN status = 3 THEN 1 ELSE 0 END, priority, seq, "
    "CASE WHEN status = 3 AND NOT " OUTBOX_SQLITE_KEEPS_FLIGHT " THEN retry_after ELSE 0 END "
    OUTBOX_SQLITE_LINE_HEAD("min(?3, outbox_keys.head_seq)") ") WHERE user_id = ?1 AND ordering_key = ?2";
#undef OUTBOX_SQLITE_KEEPS_FLIGHT
// A line with no row yet (a reset event rejoining a line that had ended): one headed from ?3,
// if the line has an undelivered event there; nothing in flight, as no row said so.
inline constexpr std::string_view insert_line_sql =
    "INSERT INTO outbox_keys(user_id, ordering_key, state, priority, head_seq, ready_at) "
    "SELECT ?1, ?2, CASE WHEN status = 3 THEN 1 ELSE 0 END, priority, seq, "
    "CASE WHEN status = 3 THEN retry_after ELSE 0 END " OUTBOX_SQLITE_LINE_HEAD("?3") " ON CONFLICT DO NOTHING";
#undef OUTBOX_SQLITE_LINE_HEAD
// Marks the lines of a claim's heads in flight: the lines ready_heads_sql read, selected again
// by the same query in the same transaction (?2: how many it returned), before any is claimed.
// The row value makes each line found by primary key; a bare ordering_key IN list would walk
// every ready line of the user.
inline constexpr std::string_view block_heads_sql =
    "UPDATE outbox_keys SET state = 2 WHERE (user_id, ordering_key) IN ("
    "SELECT user_id, ordering_key FROM outbox_keys WHERE user_id = ?1 AND state = 0 "
    "ORDER BY priority DESC, head_seq LIMIT ?2)";

/// The queries of stats(), each for one user (?1) and for all users; explain_stats() shows their
/// plans. None reads the completed history: the events still waiting (pending, processing,
/// failed, dead) are counted through the status index, which also gives the lowest pending seq
/// (the oldest pending event, as the other storages define it); completed ones are read from
/// their per-user count.
struct user_or_all {
  std::string_view user, all;
};
// The statuses an event leaves (pending, processing, failed, dead), counted per user: when
// stats() finds no counts it can trust, then kept up to date by this connection's commits.
inline constexpr std::string_view count_waiting_sql =
    "SELECT status, user_id, count(*) FROM outbox_events WHERE status IN (0, 1, 3, 4) GROUP BY status, user_id";
// A user's first event in a status (?2) in append order: the first entry of its range of the
// status index. For the oldest pending, failed and dead events.
inline constexpr std::string_view oldest_in_status_sql =
    "SELECT min(seq) FROM outbox_events WHERE status = ?2 AND user_id = ?1";
inline constexpr user_or_all count_completed{"SELECT n FROM outbox_completed WHERE user_id = ?1",
                                             "SELECT sum(n) FROM outbox_completed"};
// A user's oldest claimable event: the earliest-appended head that is ready or due (?2 is now)
// and claimable (no expired lease counts: they become pending at the next claim). Sorting the
// user's lines by head would read every one of them, and a line is an entity by default. Instead,
// ready heads are read through their index, which orders them by priority and then head: the
// first head of each priority, found by seeking from one priority to the next (a few seeks, as a
// device uses a few priorities). Heads whose retry has come but that no claim has promoted yet
// are read from their range of the due index.
inline constexpr std::string_view oldest_due_sql =
    "WITH RECURSIVE p(v) AS ("
    " SELECT max(priority) FROM outbox_keys WHERE user_id = ?1 AND state = 0"
    " UNION ALL"
    " SELECT (SELECT max(priority) FROM outbox_keys WHERE user_id = ?1 AND state = 0 AND priority < p.v)"
    " FROM p WHERE p.v IS NOT NULL) "
    "SELECT min(head) FROM ("
    " SELECT (SELECT min(head_seq) FROM outbox_keys WHERE user_id = ?1 AND state = 0 AND priority = p.v) AS head"
    " FROM p WHERE p.v IS NOT NULL"
    " UNION ALL"
    " SELECT min(head_seq) FROM outbox_keys WHERE user_id = ?1 AND state = 1 AND ready_at <= ?2)";

// ---- the table -----------------------------------------------------------------------------------

// An outcome's changes to its event (?3 status, ?4 attempts, ?5 time, ?6 retry time, ?7 error,
// ?8 remote id): the lifecycle::apply_outcome rule in SQL. The lease ends with it.
#define OUTBOX_SQLITE_RECORD_SET                                                                     \
  "UPDATE outbox_events SET status = ?3, attempts = ?4, updated_at = ?5, "                          \
  "retry_after = CASE WHEN ?3 = 3 THEN ?6 ELSE retry_after END, "                                   \
  "completed_at = CASE WHEN ?3 = 2 THEN ?5 ELSE completed_at END, "                                 \
  "last_error = CASE WHEN ?7 <> '' THEN ?7 ELSE last_error END, "                                   \
  "remote_id = CASE WHEN ?3 = 2 THEN ?8 ELSE remote_id END, lease = 0, lease_until = 0 "

// X(member, SQL): every prepared statement, reused for the connection's life.
#define OUTBOX_SQLITE_STATEMENTS(X)                                                                            \
  X(begin, "BEGIN IMMEDIATE")                                                                                  \
  X(commit_tx, "COMMIT")                                                                                       \
  X(rollback_tx, "ROLLBACK")                                                                                   \
  X(savepoint, "SAVEPOINT outbox_write")                                                                       \
  X(release, "RELEASE outbox_write")                                                                           \
  X(rollback_to, "ROLLBACK TO outbox_write")                                                                   \
  /* New-event validation happens in C++ before this insert: a new event is pending, unclaimed. */            \
  X(insert_event_stmt,                                                                                         \
    "INSERT INTO outbox_events(id, type, entity_id, entity_type, ordering_key, user_id, payload, priority, "    \
    "status, attempts, max_attempts, created_at, updated_at, retry_after, completed_at, last_error, "           \
    "remote_id, lease, lease_until) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, 0, ?9, ?10, ?11, 0, 0, ?12, "    \
    "'', 0, 0)")                                                                                               \
  X(insert_key_if_absent,                                                                                      \
    "INSERT INTO outbox_keys(user_id, ordering_key, state, priority, head_seq, ready_at) "                      \
    "VALUES(?1, ?2, 0, ?3, ?4, 0) ON CONFLICT DO NOTHING")                                                     \
  X(refresh_line, refresh_line_sql)                                                                            \
  X(insert_line, insert_line_sql)                                                                              \
  X(delete_key, "DELETE FROM outbox_keys WHERE user_id = ?1 AND ordering_key = ?2")                           \
  X(expired_leases, expired_leases_sql)                                                                        \
  X(expire_one,                                                                                                \
    "UPDATE outbox_events SET status = ?2, lease = 0, lease_until = 0, updated_at = ?3, "                      \
    "last_error = ?4 WHERE seq = ?1")                                                                          \
  X(promote_due, promote_due_sql)                                                                              \
  X(ready_heads, ready_heads_sql)                                                                              \
  X(claim_one,                                                                                                 \
    "UPDATE outbox_events SET status = 1, attempts = attempts + 1, lease = ?2, "                               \
    "lease_until = ?3, updated_at = ?4 WHERE seq = ?1 RETURNING " OUTBOX_SQLITE_EVENT_COLUMNS)                 \
  X(block_heads, block_heads_sql)                                                                              \
  /* Record precondition, lifecycle::may_record: an outcome applies only to an event still in */             \
  /* flight under the lease it carries (WHERE ... status = 1 AND lease = ?2); a stale one changes nothing. */ \
  X(record_one,                                                                                                \
    OUTBOX_SQLITE_RECORD_SET "WHERE id = ?1 AND status = 1 AND lease = ?2 "                                    \
    "RETURNING seq, user_id, ordering_key, entity_type, entity_id, last_error")                                \
  /* The same for an event this connection claimed: found by its seq (?9), nothing returned. */                \
  X(record_claimed, OUTBOX_SQLITE_RECORD_SET "WHERE seq = ?9 AND id = ?1 AND status = 1 AND lease = ?2")       \
  X(find_event, "SELECT " OUTBOX_SQLITE_EVENT_COLUMNS " FROM outbox_events WHERE id = ?1")                    \
  X(find_seq, "SELECT seq, status, attempts, user_id, ordering_key FROM outbox_events WHERE id = ?1")          \
  /* Write-back rule, lifecycle::write_back, delivered: the remote id always; synced (and its */              \
  /* error cleared) only when the delivered event is still the entity's last one; version + 1. */             \
  X(write_back_completed,                                                                                      \
    "UPDATE outbox_entities SET remote_id = CASE WHEN ?3 <> '' THEN ?3 ELSE remote_id END, "                   \
    "sync = CASE WHEN last_event = ?4 THEN 1 ELSE sync END, "                                                  \
    "sync_error = CASE WHEN last_event = ?4 THEN '' ELSE sync_error END, version = version + 1 "               \
    "WHERE collection = ?1 AND id = ?2")                                                                       \
  /* Write-back rule, lifecycle::write_back, dead: the error is recorded on the entity. */                     \
  X(write_back_dead,                                                                                           \
    "UPDATE outbox_entities SET sync_error = ?3, version = version + 1 WHERE collection = ?1 AND id = ?2")     \
  X(next_retry, "SELECT min(ready_at) FROM outbox_keys WHERE user_id = ?1 AND state = 1")                     \
  X(next_lease_end,                                                                                            \
    "SELECT min(lease_until) FROM outbox_events INDEXED BY outbox_events_leases WHERE status = 1")             \
  X(reset_one,                                                                                                 \
    "UPDATE outbox_events SET status = 0, attempts = 0, retry_after = 0, updated_at = ?2 "                     \
    "WHERE id = ?1 AND status IN (3, 4) RETURNING user_id, ordering_key, seq")                                 \
  X(dead_of_user, "SELECT id FROM outbox_events WHERE user_id = ?1 AND status = 4")                           \
  X(dead_all, "SELECT id FROM outbox_events WHERE status = 4")                                                 \
  X(purge, "DELETE FROM outbox_events WHERE status = 2 AND completed_at < ?1")                                 \
  X(purge_counts,                                                                                              \
    "SELECT user_id, count(*) FROM outbox_events WHERE status = 2 AND completed_at < ?1 GROUP BY user_id")     \
  X(late_retries, "SELECT seq, user_id, ordering_key FROM outbox_events WHERE status = 3 AND retry_after > ?1") \
  X(clamp_retry, "UPDATE outbox_events SET retry_after = ?2 WHERE seq = ?1")                                   \
  X(clamp_leases,                                                                                              \
    "UPDATE outbox_events INDEXED BY outbox_events_leases SET lease_until = ?1 "                               \
    "WHERE status = 1 AND lease_until > ?1")                                                                   \
  X(find_entity_stmt,                                                                                          \
    "SELECT " OUTBOX_SQLITE_ENTITY_COLUMNS " FROM outbox_entities WHERE collection = ?1 AND id = ?2")          \
  X(find_by_key_stmt,                                                                                          \
    "SELECT " OUTBOX_SQLITE_ENTITY_COLUMNS " FROM outbox_entities WHERE collection = ?1 AND user_id = ?2 "     \
    "AND natural_key = ?3")                                                                                    \
  X(entity_version, "SELECT version FROM outbox_entities WHERE collection = ?1 AND id = ?2")                  \
  X(natural_key_owner,                                                                                         \
    "SELECT id FROM outbox_entities WHERE collection = ?1 AND user_id = ?2 AND natural_key = ?3")              \
  X(upsert_entity,                                                                                             \
    "INSERT INTO outbox_entities(" OUTBOX_SQLITE_ENTITY_COLUMNS                                                \
    ") VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) ON CONFLICT(collection, id) DO "         \
    "UPDATE SET user_id = excluded.user_id, natural_key = excluded.natural_key, payload = "                    \
    "excluded.payload, occurred_at = excluded.occurred_at, sync = excluded.sync, remote_id = "                 \
    "excluded.remote_id, sync_error = excluded.sync_error, last_event = excluded.last_event, version = "       \
    "excluded.version, updated_at = excluded.updated_at")                                                      \
  X(delete_entity, "DELETE FROM outbox_entities WHERE collection = ?1 AND id = ?2")                           \
  X(replace_event, "UPDATE outbox_events SET type = ?2, payload = ?3, updated_at = ?4 WHERE seq = ?1")         \
  X(drop_event, "DELETE FROM outbox_events WHERE seq = ?1")                                                    \
  X(add_completed,                                                                                             \
    "INSERT INTO outbox_completed(user_id, n) VALUES(?1, ?2) "                                                 \
    "ON CONFLICT(user_id) DO UPDATE SET n = n + excluded.n")                                                   \
  X(created_at_of, "SELECT created_at FROM outbox_events WHERE seq = ?1")                                      \
  X(count_waiting, count_waiting_sql)                                                                          \
  X(oldest_in_status, oldest_in_status_sql)                                                                    \
  X(oldest_due_of, oldest_due_sql)                                                                             \
  X(data_version, "PRAGMA data_version")                                                                       \
  X(completed_of_user, count_completed.user)                                                                   \
  X(completed_of_all, count_completed.all)

/// The prepared statements of one connection, one member per row of the table.
struct statements {
#define OUTBOX_SQLITE_DECLARE(member, sql) statement member;
  OUTBOX_SQLITE_STATEMENTS(OUTBOX_SQLITE_DECLARE)
#undef OUTBOX_SQLITE_DECLARE

  /// Prepares every statement; the first failure in table order, if any.
  result<void> prepare(sqlite3* db) {
#define OUTBOX_SQLITE_PREPARE(member, sql) member = statement(db, sql);
    OUTBOX_SQLITE_STATEMENTS(OUTBOX_SQLITE_PREPARE)
#undef OUTBOX_SQLITE_PREPARE
#define OUTBOX_SQLITE_CHECK(member, sql) \
  if (member.prepare_error()) return *member.prepare_error();
    OUTBOX_SQLITE_STATEMENTS(OUTBOX_SQLITE_CHECK)
#undef OUTBOX_SQLITE_CHECK
    return {};
  }

  /// Finalises every statement: before the connection closes.
  void finalize() noexcept {
#define OUTBOX_SQLITE_FINALIZE(member, sql) member = statement();
    OUTBOX_SQLITE_STATEMENTS(OUTBOX_SQLITE_FINALIZE)
#undef OUTBOX_SQLITE_FINALIZE
  }

  /// The completed-count query of stats(): for one user or for all.
  statement& completed_count(bool for_user) noexcept { return for_user ? completed_of_user : completed_of_all; }
};

}  // namespace outbox::detail::sqlite

#undef OUTBOX_SQLITE_STATEMENTS
#undef OUTBOX_SQLITE_ENTITY_COLUMNS
#undef OUTBOX_SQLITE_EVENT_COLUMNS
#undef OUTBOX_SQLITE_RECORD_SET
