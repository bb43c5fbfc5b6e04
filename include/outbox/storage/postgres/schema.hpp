#pragma once
/// \file
/// The outbox schema in SQL, its version, and how a database is brought to it: the schema name
/// is checked as an identifier before any SQL holds it; a newer schema is refused before
/// anything is written; creation runs in one transaction under an advisory lock, so relays
/// starting together create it once; an older schema takes the missing migration steps in that
/// same transaction.

#include <libpq-fe.h>

#include <iterator>
#include <string>
#include <string_view>

#include "outbox/error.hpp"
#include "outbox/storage/postgres/connection.hpp"

namespace outbox::detail::postgres {

inline constexpr int schema_version = 4;

/// Whether `name` may name the outbox's schema (see postgres_options::schema). Only such a
/// name is ever placed into SQL text; every value is a bound parameter.
[[nodiscard]] inline result<void> check_schema_name(std::string_view name) {
  auto bad = [&](const char* why) {
    return error(errc::invalid_argument, "outbox::postgres_options::schema \"" + std::string(name) + "\": " + why);
  };
  if (name.empty() || name.size() > 48) return bad("must have 1 to 48 characters");
  if (name.substr(0, 3) == "pg_") return bad("must not start with pg_ (reserved by PostgreSQL)");
  if (name[0] >= '0' && name[0] <= '9') return bad("must not start with a digit");
  for (const char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
      return bad("may hold only lower-case ASCII letters, digits and _");
  return {};
}

/// `sql` with every `{S}` replaced by the (checked) schema name.
[[nodiscard]] inline std::string in_schema(std::string_view sql, std::string_view schema) {
  std::string out;
  out.reserve(sql.size() + 64);
  for (std::size_t i = 0; i < sql.size();) {
    if (sql.compare(i, 3, "{S}") == 0) {
      out += schema;
      i += 3;
    } else {
      out += sql[i++];
    }
  }
  return out;
}

/// The channel NOTIFY uses for new events of a schema.
[[nodiscard]] inline std::string channel_of(std::string_view schema) { return std::string(schema) + "_events"; }

// Times are microseconds since the epoch (bigint), as outbox::to_micros gives them; statuses are
// outbox::status's values.
inline constexpr std::string_view schema_sql = R"sql(
CREATE SCHEMA IF NOT EXISTS {S};
CREATE TABLE {S}.meta (
  key   text PRIMARY KEY,
  value text NOT NULL
);
-- Lease tokens: one sequence for every relay, so no two claims ever share a token.
CREATE SEQUENCE {S}.leases;
CREATE TABLE {S}.events (
  seq          bigint   GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id           uuid     NOT NULL UNIQUE,
  type         text     NOT NULL,
  entity_id    text     NOT NULL,
  entity_type  text     NOT NULL,
  ordering_key text     NOT NULL,
  user_id      text     NOT NULL,
  payload      bytea    NOT NULL,
  priority     integer  NOT NULL,
  status       smallint NOT NULL,
  attempts     integer  NOT NULL,
  max_attempts integer  NOT NULL,
  created_at   bigint   NOT NULL,
  updated_at   bigint   NOT NULL,
  retry_after  bigint   NOT NULL,
  completed_at bigint   NOT NULL,
  last_error   text     NOT NULL,
  remote_id    text     NOT NULL,
  lease        bigint   NOT NULL,
  lease_until  bigint   NOT NULL,
  -- processing: the relay holding the claim (see postgres_storage::relay_id)
  relay        bigint   NOT NULL
);
-- Each ordering key's undelivered events in append order: is an event its key's head? (Version 3
-- keeps waiting events only.)
CREATE INDEX events_line ON {S}.events (user_id, ordering_key, seq) WHERE status IN (0, 1, 3);
-- Claimable candidates of a user in claim order (priority desc, seq).
CREATE INDEX events_ready ON {S}.events (user_id, priority DESC, seq) WHERE status IN (0, 3);
-- Claims in flight by lease end: expired leases without a scan.
CREATE INDEX events_leases ON {S}.events (lease_until) WHERE status = 1;
-- Pages and counts by status and user, in append order. (Version 3 keeps pending, failed, dead.)
CREATE INDEX events_status ON {S}.events (status, user_id, seq);
-- One row per ordering key: the key's lock and whether (which seq of) it is in flight. A claim
-- locks the key rows it takes (FOR UPDATE SKIP LOCKED) and reads `in_flight` from their latest
-- version, so two relays can never both put one key in flight, however old their snapshots.
-- An append locks the rows of its keys until it commits, so a key's events commit in seq order:
-- no event can appear behind one already delivered.
CREATE TABLE {S}.keys (
  user_id      text   NOT NULL,
  ordering_key text   NOT NULL,
  in_flight    bigint NOT NULL,
  PRIMARY KEY (user_id, ordering_key)
);
CREATE TABLE {S}.entities (
  collection  text     NOT NULL,
  id          text     NOT NULL,
  user_id     text     NOT NULL,
  natural_key text,
  payload     bytea    NOT NULL,
  occurred_at bigint   NOT NULL,
  sync        smallint NOT NULL,
  remote_id   text     NOT NULL,
  sync_error  text     NOT NULL,
  last_event  uuid,
  version     bigint   NOT NULL,
  created_at  bigint   NOT NULL,
  updated_at  bigint   NOT NULL,
  PRIMARY KEY (collection, id)
);
CREATE UNIQUE INDEX entities_natural ON {S}.entities (collection, user_id, natural_key)
  WHERE natural_key IS NOT NULL;
CREATE INDEX entities_time ON {S}.entities (collection, user_id, occurred_at, id);
-- New events wake idle relays: one notification per appending statement, delivered at commit
-- (and merged with the others of its transaction), also for rows another program inserts.
CREATE FUNCTION {S}.notify_appended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify(TG_ARGV[0], '');
  RETURN NULL;
END
$$;
CREATE TRIGGER events_appended AFTER INSERT ON {S}.events
  FOR EACH STATEMENT EXECUTE FUNCTION {S}.notify_appended('{S}_events');
INSERT INTO {S}.meta (key, value) VALUES ('schema_version', '1');
)sql";

/// Runs a script of statements without parameters (the schema: fixed text and the checked name).
[[nodiscard]] inline result<void> exec_script(PGconn* c, const std::string& sql, std::string_view what) {
  result_handle r(PQexec(c, sql.c_str()));
  const auto st = PQresultStatus(r.get());
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return failure(c, r.get(), what);
  return {};
}

/// The steps from each version to the next: `migrations[v - 1]` brings version v to v + 1. A new
/// database is created at version 1 (schema_sql) and then takes every step, on empty tables.
inline constexpr std::string_view migrations[] = {
    // 2: the audit queries by entity and by type (event_query::entity_id, ::type), in append order.
    R"sql(
CREATE INDEX events_entity ON {S}.events (entity_id, seq);
CREATE INDEX events_type ON {S}.events (type, seq);
UPDATE {S}.meta SET value = '2' WHERE key = 'schema_version';
)sql",
    // 3: fewer index entries per state change. No update of an event is HOT (status is
    // indexed), so each one writes a new version of the row and an entry into every index whose
    // predicate that version meets. The line holds waiting events only (pending, failed): a
    // claim's head check learns "in flight" from the key row (keys.in_flight), not from the line.
    // The status index holds the statuses whose oldest age the statistics read (pending, failed,
    // dead), not processing and completed, which every delivery passes through: a claim and a
    // delivery's record add an entry to neither.
    R"sql(
DROP INDEX {S}.events_line;
CREATE INDEX events_line ON {S}.events (user_id, ordering_key, seq) WHERE status IN (0, 3);
DROP INDEX {S}.events_status;
CREATE INDEX events_status ON {S}.events (status, user_id, seq) WHERE status IN (0, 3, 4);
UPDATE {S}.meta SET value = '3' WHERE key = 'schema_version';
)sql",
    // 4: completed events counted where they change (a delivery recorded, a purge), in the same
    // transaction, so statistics read no history. A relay adds to its own shard of a user's count
    // (completed_shard in link.hpp), so relays recording at once seldom queue on one row; a purge
    // takes from shard 0. The count is the sum of a user's shards.
    R"sql(
CREATE TABLE {S}.completed (
  user_id text    NOT NULL,
  shard   integer NOT NULL,
  n       bigint  NOT NULL,
  PRIMARY KEY (user_id, shard)
);
INSERT INTO {S}.completed (user_id, shard, n) SELECT user_id, 0, count(*) FROM {S}.events WHERE status = 2 GROUP BY user_id;
UPDATE {S}.meta SET value = '4' WHERE key = 'schema_version';
)sql",
};
static_assert(std::size(migrations) == schema_version - 1, "one migration step per version after the first");

/// Brings the database to `schema_version` in `schema`, or refuses it untouched.
[[nodiscard]] inline result<void> migrate(PGconn* c, std::string_view schema) {
  if (auto checked = check_schema_name(schema); !checked) return checked;
  const std::string name(schema);
  if (auto b = exec_script(c, "BEGIN", "opening the schema transaction"); !b) return b;
  auto fail = [&](error e) -> result<void> {
    (void)exec_script(c, "ROLLBACK", "rolling back the schema transaction");
    return e;
  };
  // Relays starting together: one creates the schema, the others wait and then find it.
  const query lock{"SELECT pg_advisory_xact_lock(hashtext('outbox schema ' || $1))", {name}};
  if (auto l = run_one(c, lock, "locking the schema"); !l) return fail(l.error());
  const query meta{"SELECT to_regclass(format('%I.meta', $1::text)) IS NOT NULL", {name}};
  auto exists = run_one(c, meta, "looking for the schema");
  if (!exists) return fail(exists.error());
  int at = 1;  // the version the database holds; a new one is created at 1
  if (std::string_view(exists->text(0, 0)) == "t") {
    const std::string read = in_schema("SELECT value FROM {S}.meta WHERE key = 'schema_version'", schema);
    auto version = run_one(c, {read}, "reading the schema version");
    if (!version) return fail(version.error());
    if (version->rows() != 1)
      return fail(error(errc::schema_mismatch, "schema " + name + " has no schema_version"));
    const auto found = version->integer(0, 0);
    if (found > schema_version)
      return fail(error(errc::schema_too_new, "schema " + name + " has version " + std::to_string(found) +
                                                 "; this library knows up to " + std::to_string(schema_version)));
    if (found < 1) return fail(error(errc::schema_mismatch, "schema " + name + " has version " + std::to_string(found)));
    at = static_cast<int>(found);
  } else if (auto created = exec_script(c, in_schema(schema_sql, schema), "creating the schema"); !created) {
    return fail(created.error());
  }
  for (; at < schema_version; ++at)
    if (auto step = exec_script(c, in_schema(migrations[at - 1], schema), "migrating the schema to version " +
                                                                              std::to_string(at + 1));
        !step)
      return fail(step.error());
  if (auto done = exec_script(c, "COMMIT", "committing the schema"); !done) return fail(done.error());
  return {};
}

}  // namespace outbox::detail::postgres
