#pragma once
/// \file
/// Every SQL statement of the storage, in one table, written for the schema `{S}` and completed
/// with the checked schema name once, when the storage is built. Values are always parameters
/// ($1, $2, ...); batches travel as arrays, unnested by the statement. Also here: the event
/// columns and the reader of their rows.

#include <string>
#include <string_view>

#include "outbox/entity.hpp"
#include "outbox/event.hpp"
#include "outbox/storage/postgres/connection.hpp"
#include "outbox/storage/postgres/schema.hpp"

// The column lists as literals, so the table's SQL is built at compile time. #undef at the end.
#define OUTBOX_PG_EVENT_COLUMNS                                                                          \
  "seq, id, type, entity_id, entity_type, ordering_key, user_id, payload, priority, status, attempts, " \
  "max_attempts, created_at, updated_at, retry_after, completed_at, last_error, remote_id, lease, lease_until"
#define OUTBOX_PG_EVENT_COLUMNS_E                                                                          \
  "e.seq, e.id, e.type, e.entity_id, e.entity_type, e.ordering_key, e.user_id, e.payload, e.priority, "   \
  "e.status, e.attempts, e.max_attempts, e.created_at, e.updated_at, e.retry_after, e.completed_at, "     \
  "e.last_error, e.remote_id, e.lease, e.lease_until"
// Event `e` heads its ordering key: no waiting (pending or failed) event of the key before it (this
// subplan) and none of the key in flight (its key row's `in_flight` is 0; see the keys table in
// schema.hpp). Dead and delivered events hold no key back.
// The subplan reads the events_line index at (user_id, ordering_key, seq < e.seq): only the
// entries before e, not the key's whole line, so its cost does not grow with the key's backlog.
// OFFSET 0 keeps it a subplan run per candidate with e's user, key and seq bound: the planner
// cannot turn it into an anti-join. As a join, on a table without statistics (filled in one
// burst, not analyzed yet) it was planned as a scan of the user's whole line index per
// candidate: a claim of 100 at 10k pending took 1.7 s instead of 2 ms.
#define OUTBOX_PG_FIRST_OF_KEY                                                                            \
  "NOT EXISTS (SELECT 1 FROM {S}.events p WHERE p.user_id = e.user_id AND p.ordering_key = e.ordering_key " \
  "AND p.seq < e.seq AND p.status IN (0, 3) OFFSET 0)"
#define OUTBOX_PG_ENTITY_COLUMNS                                                                                  \
  "collection, id, user_id, natural_key, payload, occurred_at, sync, remote_id, sync_error, last_event, version, " \
  "created_at, updated_at"

namespace outbox::detail::postgres {

inline constexpr std::string_view event_columns = OUTBOX_PG_EVENT_COLUMNS;
inline constexpr std::string_view entity_columns = OUTBOX_PG_ENTITY_COLUMNS;

/// Row `row` of a result whose columns are `event_columns`.
inline event read_event(const result_handle& r, int row) {
  event e;
  e.seq = static_cast<std::uint64_t>(r.integer(row, 0));
  e.id = r.id(row, 1);
  e.type = r.str(row, 2);
  e.entity_id = r.str(row, 3);
  e.entity_type = r.str(row, 4);
  e.ordering_key = r.str(row, 5);
  e.user_id = r.str(row, 6);
  e.payload = r.bytes(row, 7);
  e.priority = static_cast<int>(r.integer(row, 8));
  e.status = static_cast<status>(r.integer(row, 9));
  e.attempts = static_cast<int>(r.integer(row, 10));
  e.max_attempts = static_cast<int>(r.integer(row, 11));
  e.created_at = r.time(row, 12);
  e.updated_at = r.time(row, 13);
  e.retry_after = r.time(row, 14);
  e.completed_at = r.time(row, 15);
  e.last_error = r.str(row, 16);
  e.remote_id = r.str(row, 17);
  e.lease = static_cast<std::uint64_t>(r.integer(row, 18));
  e.lease_until = r.time(row, 19);
  return e;
}

/// Row `row` of a result whose columns are `entity_columns`.
inline entity_record read_entity(const result_handle& r, int row) {
  entity_record x;
  x.collection = r.str(row, 0);
  x.id = r.str(row, 1);
  x.user_id = r.str(row, 2);
  x.natural_key = r.is_null(row, 3) ? std::string() : r.str(row, 3);
  x.payload = r.bytes(row, 4);
  x.occurred_at = r.time(row, 5);
  x.sync = static_cast<sync_status>(r.integer(row, 6));
  x.remote_id = r.str(row, 7);
  x.sync_error = r.str(row, 8);
  x.last_event = r.is_null(row, 9) ? event_id{} : r.id(row, 9);
  x.version = static_cast<std::uint64_t>(r.integer(row, 10));
  x.created_at = r.time(row, 11);
  x.updated_at = r.time(row, 12);
  return x;
}

// X(member, SQL): every statement of the storage.
#define OUTBOX_PG_STATEMENTS(X)                                                                                   \
  /* The keys of a batch, locked in key order until the transaction ends (schema.hpp, keys). */                  \
  X(lock_keys,                                                                                                    \
    "INSERT INTO {S}.keys (user_id, ordering_key, in_flight) SELECT DISTINCT u, k, 0::bigint FROM "               \
    "unnest($1::text[], $2::text[]) AS n(u, k) ORDER BY 1, 2 ON CONFLICT (user_id, ordering_key) DO UPDATE "      \
    "SET in_flight = {S}.keys.in_flight")                                                                         \
  /* A batch of new events in one statement, in batch order (ordinality); validation is C++'s */                 \
  /* (lifecycle::acceptable_new). An id the storage holds fails the statement (unique_violation), */            \
  /* and with it the round trip's transaction: a batch is stored whole or not at all. */                         \
  X(append,                                                                                                       \
    "INSERT INTO {S}.events (id, type, entity_id, entity_type, ordering_key, user_id, payload, priority, status, " \
    "attempts, max_attempts, created_at, updated_at, retry_after, completed_at, last_error, remote_id, lease, "    \
    "lease_until, relay) "                                                                                        \
    "SELECT id, type, entity_id, entity_type, ordering_key, user_id, payload, priority, 0, 0, max_attempts, "     \
    "created_at, updated_at, 0, 0, last_error, '', 0, 0, 0 FROM unnest($1::uuid[], $2::text[], $3::text[], "        \
    "$4::text[], $5::text[], $6::text[], $7::bytea[], $8::integer[], $9::integer[], $10::bigint[], $11::bigint[], " \
    "$12::text[]) WITH ORDINALITY AS n(id, type, entity_id, entity_type, ordering_key, user_id, payload, "         \
    "priority, max_attempts, created_at, updated_at, last_error, ord) ORDER BY ord "                               \
    "RETURNING id, seq")                                                              \
  /* Lease expiry, lifecycle::lease_expiry in SQL: an event whose lease ended goes back to pending, */            \
  /* or to dead when that was its last attempt (lifecycle::last_attempt: attempts >= max_attempts), */            \
  /* with the rule's messages ($2 dead, $3 pending); a dead one's error is written back onto its */               \
  /* entity (lifecycle::write_back). Rows another relay is changing are left to it (SKIP LOCKED). */             \
  X(expire,                                                                                                       \
    "WITH x AS (UPDATE {S}.events e SET status = CASE WHEN e.attempts >= e.max_attempts THEN 4 ELSE 0 END, "       \
    "lease = 0, lease_until = 0, relay = 0, updated_at = $1, "                                                    \
    "last_error = CASE WHEN e.attempts >= e.max_attempts THEN $2 ELSE $3 END "                                    \
    "WHERE e.seq IN (SELECT v.seq FROM {S}.events v JOIN {S}.keys k ON k.user_id = v.user_id AND "                \
    "k.ordering_key = v.ordering_key WHERE v.status = 1 AND v.lease_until <= $1 FOR UPDATE OF v, k SKIP LOCKED) " \
    "RETURNING e.seq, e.user_id, e.ordering_key, e.status, e.entity_type, e.entity_id, e.last_error), "           \
    "k AS (UPDATE {S}.keys k SET in_flight = 0 FROM x WHERE k.user_id = x.user_id AND "                           \
    "k.ordering_key = x.ordering_key AND k.in_flight = x.seq) "                                                   \
    "UPDATE {S}.entities t SET sync_error = x.last_error, version = t.version + 1 FROM x "                        \
    "WHERE x.status = 4 AND x.entity_type <> '' AND t.collection = x.entity_type AND t.id = x.entity_id")         \
  /* The claim order, stated once in detail/lifecycle.hpp: of the user's claimable events (pending, or */         \
  /* failed and due) that head their ordering key (no undelivered event of the key before them, and */          \
  /* none of the key in flight: a reset dead event may rejoin ahead of one), priority desc then seq. */          \
  /* FOR UPDATE ... SKIP LOCKED on the event and on its key row: an event or key another relay is */           \
  /* claiming or recording is passed over, never waited for; the key row's latest version must say */          \
  /* nothing is in flight (see the keys table in schema.hpp), so a key is in flight on at most one relay */     \
  /* and no event is handed out twice; that row is also the head check's "none of the key in flight". */        \
  /* The key row is locked in a LATERAL subquery (a locking subquery is never merged into the join) and */      \
  /* the rest of the head check is a subplan (OUTBOX_PG_FIRST_OF_KEY): both are probes at the candidate, */     \
  /* so the only plan left walks events_ready in claim order and stops at the LIMIT, with or without */         \
  /* statistics. As a join, a table filled in one burst and not yet analyzed was planned from the user's */      \
  /* key rows with a head check for each of the user's events: 1.1-1.5 s per claim at 100k, 15-20 ms now. */    \
  X(claim,                                                                                                        \
    "WITH c AS (SELECT e.seq FROM {S}.events e CROSS JOIN LATERAL (SELECT 1 FROM {S}.keys k WHERE "               \
    "k.user_id = e.user_id AND k.ordering_key = e.ordering_key AND k.in_flight = 0 FOR UPDATE SKIP LOCKED) k "    \
    "WHERE e.user_id = $1 AND (e.status = 0 OR (e.status = 3 AND e.retry_after <= $2)) AND "                      \
    OUTBOX_PG_FIRST_OF_KEY " ORDER BY e.priority DESC, e.seq LIMIT $4 FOR UPDATE OF e SKIP LOCKED), "              \
    "u AS (UPDATE {S}.events e SET status = 1, attempts = e.attempts + 1, lease = nextval('{S}.leases'), "         \
    "lease_until = $3, updated_at = $2, relay = $5 FROM c WHERE e.seq = c.seq RETURNING " OUTBOX_PG_EVENT_COLUMNS_E "), " \
    "k AS (UPDATE {S}.keys k SET in_flight = u.seq FROM u WHERE k.user_id = u.user_id AND "                       \
    "k.ordering_key = u.ordering_key) SELECT * FROM u")                                                           \
  /* Before a record: the keys of the events it may change, locked in key order (as appends lock */              \
  /* theirs), so a record and an append never wait for each other in a cycle. Each event is probed by its */   \
  /* id, its status checked after the probe (OFFSET 0 keeps the check out of it): given `id = ANY(...) AND */   \
  /* status = 1`, the planner read events_leases, every entry of it, dead ones included until a vacuum, */     \
  /* or the whole table: a cost growing with the drain. */                                                       \
  X(lock_recorded_keys,                                                                                           \
    "SELECT 1 FROM {S}.keys k WHERE (k.user_id, k.ordering_key) IN (SELECT x.user_id, x.ordering_key FROM "        \
    "unnest($1::uuid[]) AS o(id) CROSS JOIN LATERAL (SELECT e.user_id, e.ordering_key, e.status FROM "            \
    "{S}.events e WHERE e.id = o.id OFFSET 0) x WHERE x.status = 1) ORDER BY k.user_id, k.ordering_key "           \
    "FOR UPDATE OF k")                                                                                            \
  /* The record precondition, lifecycle::may_record in SQL: an outcome applies only to an event still */          \
  /* processing under the lease it carries; a stale one matches no row. Delivered and dead events are */          \
  /* written back onto their entities (lifecycle::write_back): the remote id; synced, error cleared, */           \
  /* only while the event is the entity's last; a dead event's error; the version moves on. */                    \
  X(record,                                                                                                       \
    "WITH o AS (SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::smallint[], $4::integer[], $5::bigint[], "      \
    "$6::bigint[], $7::text[], $8::text[]) AS o(id, lease, st, attempts, at, retry_after, error, remote_id)), "     \
    "u AS (UPDATE {S}.events e SET status = o.st, attempts = o.attempts, updated_at = o.at, "                     \
    "retry_after = CASE WHEN o.st = 3 THEN o.retry_after ELSE e.retry_after END, "                                \
    "completed_at = CASE WHEN o.st = 2 THEN o.at ELSE e.completed_at END, "                                       \
    "last_error = CASE WHEN o.error <> '' THEN o.error ELSE e.last_error END, "                                   \
    "remote_id = CASE WHEN o.st = 2 THEN o.remote_id ELSE e.remote_id END, lease = 0, lease_until = 0, relay = 0 " \
    "FROM o WHERE e.id = o.id AND e.status = 1 AND e.lease = o.lease "                                            \
    "RETURNING e.id, e.seq, e.user_id, e.ordering_key, e.status, e.entity_type, e.entity_id, e.remote_id, "      \
    "e.last_error), k AS (UPDATE {S}.keys k SET in_flight = 0 FROM u WHERE k.user_id = u.user_id AND "            \
    "k.ordering_key = u.ordering_key AND k.in_flight = u.seq), "                                                  \
    "w AS (UPDATE {S}.entities t SET "                                                                            \
    "remote_id = CASE WHEN u.status = 2 AND u.remote_id <> '' THEN u.remote_id ELSE t.remote_id END, "            \
    "sync = CASE WHEN u.status = 2 AND t.last_event = u.id THEN 1 ELSE t.sync END, "                              \
    "sync_error = CASE WHEN u.status = 4 THEN u.last_error WHEN t.last_event = u.id THEN '' ELSE t.sync_error END, " \
    "version = t.version + 1 FROM u WHERE u.status IN (2, 4) AND u.entity_type <> '' "                            \
    "AND t.collection = u.entity_type AND t.id = u.entity_id), "                                                  \
    "c AS (INSERT INTO {S}.completed AS c (user_id, shard, n) SELECT u.user_id, $9, count(*) FROM u "              \
    "WHERE u.status = 2 GROUP BY u.user_id ORDER BY u.user_id "                                                    \
    "ON CONFLICT (user_id, shard) DO UPDATE SET n = c.n + excluded.n) SELECT id FROM u")                          \
  X(find_event, "SELECT " OUTBOX_PG_EVENT_COLUMNS " FROM {S}.events WHERE id = $1")                              \
  /* Counts by status without the history: the waiting statuses through the partial events_status */          \
  /* index, processing through events_leases, completed from its kept count (schema.hpp, version 4). */        \
  X(count_by_status,                                                                                              \
    "SELECT status, count(*) FROM {S}.events WHERE status IN (0, 3, 4) AND ($1::text IS NULL OR user_id = $1) "   \
    "GROUP BY status UNION ALL SELECT 1, count(*) FROM {S}.events WHERE status = 1 AND "                          \
    "($1::text IS NULL OR user_id = $1) UNION ALL SELECT 2, coalesce(sum(n), 0) FROM {S}.completed "             \
    "WHERE $1::text IS NULL OR user_id = $1")                                                                     \
  /* The event of status $2 appended first: the oldest pending, failed and dead ages. The events of */          \
  /* that status are read through events_status (OFFSET 0 keeps the order and the limit out of the */            \
  /* subquery); as `ORDER BY seq LIMIT 1` the planner walked the primary key, every delivered event. */         \
  X(oldest_with_status,                                                                                           \
    "SELECT created_at FROM (SELECT created_at, seq FROM {S}.events WHERE status = $2 AND "                        \
    "($1::text IS NULL OR user_id = $1) OFFSET 0) w ORDER BY seq LIMIT 1")                                       \
  /* The oldest claimable event: a head (as in the claim: first of its key, the key not in flight) that */       \
  /* is pending, or failed and due. */                                                                            \
  X(oldest_due,                                                                                                   \
    "SELECT e.created_at FROM {S}.events e WHERE ($1::text IS NULL OR e.user_id = $1) AND (e.status = 0 OR "      \
    "(e.status = 3 AND e.retry_after <= $2)) AND " OUTBOX_PG_FIRST_OF_KEY " AND EXISTS (SELECT 1 FROM "            \
    "{S}.keys k WHERE k.user_id = e.user_id AND k.ordering_key = e.ordering_key AND k.in_flight = 0) "             \
    "ORDER BY e.seq LIMIT 1")                                                                                     \
  X(next_wake,                                                                                                    \
    "SELECT least((SELECT min(retry_after) FROM {S}.events WHERE user_id = $1 AND status = 3), "                  \
    "(SELECT min(lease_until) FROM {S}.events WHERE status = 1))")                                                \
  /* Pages of events (event_query): one statement per indexed filter, so each names its index's */              \
  /* column plainly and the planner walks that index in seq order whatever the statistics say; the */          \
  /* other filters ($2 status, $3 user; $6 type beside an entity) are checked on the rows it reads. */           \
  X(query_events,                                                                                                 \
    "SELECT " OUTBOX_PG_EVENT_COLUMNS " FROM {S}.events WHERE seq > $1 AND ($2::smallint IS NULL OR status = $2) " \
    "AND ($3::text IS NULL OR user_id = $3) ORDER BY seq LIMIT $4")                                               \
  /* By entity id ($5): the index events_entity (entity_id, seq). */                                              \
  X(query_events_of_entity,                                                                                       \
    "SELECT " OUTBOX_PG_EVENT_COLUMNS " FROM {S}.events WHERE entity_id = $5 AND seq > $1 AND "                   \
    "($2::smallint IS NULL OR status = $2) AND ($3::text IS NULL OR user_id = $3) AND "                           \
    "($6::text IS NULL OR type = $6) ORDER BY entity_id, seq LIMIT $4")                                           \
  /* By type ($5): the index events_type (type, seq). */                                                          \
  X(query_events_of_type,                                                                                         \
    "SELECT " OUTBOX_PG_EVENT_COLUMNS " FROM {S}.events WHERE type = $5 AND seq > $1 AND "                        \
    "($2::smallint IS NULL OR status = $2) AND ($3::text IS NULL OR user_id = $3) ORDER BY type, seq LIMIT $4")   \
  X(reset,                                                                                                        \
    "UPDATE {S}.events SET status = 0, attempts = 0, retry_after = 0, updated_at = $2 "                           \
    "WHERE id = ANY($1::uuid[]) AND status IN (3, 4)")                                                            \
  X(reset_dead,                                                                                                   \
    "UPDATE {S}.events SET status = 0, attempts = 0, retry_after = 0, updated_at = $2 "                           \
    "WHERE status = 4 AND ($1::text IS NULL OR user_id = $1)")                                                    \
  /* A purge takes what it deletes from shard 0 of each user's completed count, users in order. */              \
  X(purge,                                                                                                        \
    "WITH d AS (DELETE FROM {S}.events WHERE status = 2 AND completed_at < $1 RETURNING user_id), "               \
    "c AS (INSERT INTO {S}.completed AS c (user_id, shard, n) SELECT user_id, 0, -count(*) FROM d "               \
    "GROUP BY user_id ORDER BY user_id ON CONFLICT (user_id, shard) DO UPDATE SET n = c.n + excluded.n) "         \
    "SELECT count(*) FROM d")                                                                                     \
  X(clamp_retries, "UPDATE {S}.events SET retry_after = $1 WHERE status = 3 AND retry_after > $1")                \
  /* Leases are re-bounded only for this relay's own claims ($2) and those of relays that are gone: a */          \
  /* relay holds its session advisory lock (relay_lock) while its connection lives, so another live */           \
  /* relay's claims are never released. */                                                                       \
  X(clamp_leases,                                                                                                 \
    "UPDATE {S}.events e SET lease_until = $1 WHERE e.status = 1 AND e.lease_until > $1 AND (e.relay = $2 OR NOT EXISTS (" \
    "SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND "                \
    "l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND "                         \
    "((l.classid::bigint << 32) | l.objid::bigint) = e.relay))")                                                   \
  X(relay_lock, "SELECT pg_advisory_lock($1::bigint)")                                                            \
  X(entity_version, "SELECT version FROM {S}.entities WHERE collection = $1 AND id = $2 FOR UPDATE")              \
  X(natural_key_owner, "SELECT id FROM {S}.entities WHERE collection = $1 AND user_id = $2 AND natural_key = $3")  \
  X(unsent_event, "SELECT status, attempts FROM {S}.events WHERE id = $1 FOR UPDATE")                             \
  X(upsert_entity,                                                                                                \
    "INSERT INTO {S}.entities (" OUTBOX_PG_ENTITY_COLUMNS ") VALUES ($1, $2, $3, $4, $5::bytea, $6, $7, $8, $9, "   \
    "$10::uuid, $11, $12, $13) ON CONFLICT (collection, id) DO UPDATE SET user_id = excluded.user_id, "           \
    "natural_key = excluded.natural_key, payload = excluded.payload, occurred_at = excluded.occurred_at, "        \
    "sync = excluded.sync, remote_id = excluded.remote_id, sync_error = excluded.sync_error, "                    \
    "last_event = excluded.last_event, version = excluded.version, updated_at = excluded.updated_at")             \
  X(delete_entity, "DELETE FROM {S}.entities WHERE collection = $1 AND id = $2")                                  \
  X(replace_event, "UPDATE {S}.events SET type = $2, payload = $3::bytea, updated_at = $4 WHERE id = $1")         \
  X(drop_event, "DELETE FROM {S}.events WHERE id = $1")                                                           \
  X(find_entity, "SELECT " OUTBOX_PG_ENTITY_COLUMNS " FROM {S}.entities WHERE collection = $1 AND id = $2")       \
  X(find_entity_by_key,                                                                                           \
    "SELECT " OUTBOX_PG_ENTITY_COLUMNS " FROM {S}.entities WHERE collection = $1 AND user_id = $2 "              \
    "AND natural_key = $3")                                                                                       \
  X(query_entities,                                                                                               \
    "SELECT " OUTBOX_PG_ENTITY_COLUMNS " FROM {S}.entities WHERE collection = $1 AND ($2::text IS NULL OR "       \
    "user_id = $2) AND ($3::smallint IS NULL OR sync = $3) AND ($4::bigint IS NULL OR occurred_at >= $4) AND "    \
    "($5::bigint IS NULL OR occurred_at < $5) ORDER BY occurred_at, id LIMIT $6")

/// The statements of one storage, each completed for its schema.
struct statements {
#define OUTBOX_PG_DECLARE(member, sql) std::string member;
  OUTBOX_PG_STATEMENTS(OUTBOX_PG_DECLARE)
#undef OUTBOX_PG_DECLARE

  explicit statements(std::string_view schema)
#define OUTBOX_PG_INIT(member, sql) member(in_schema(sql, schema)),
      : OUTBOX_PG_STATEMENTS(OUTBOX_PG_INIT) unused_(0) {
  }
#undef OUTBOX_PG_INIT

 private:
  int unused_;
};

}  // namespace outbox::detail::postgres

#undef OUTBOX_PG_STATEMENTS
#undef OUTBOX_PG_FIRST_OF_KEY
#undef OUTBOX_PG_ENTITY_COLUMNS
#undef OUTBOX_PG_EVENT_COLUMNS_E
#undef OUTBOX_PG_EVENT_COLUMNS
