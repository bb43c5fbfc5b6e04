#pragma once
/// \file
/// The outbox schema in SQL, its version, and how a database is brought to it: a newer schema is
/// refused before anything is written, an older one migrated in one transaction.

#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "outbox/error.hpp"
#include "outbox/storage/sqlite/handle.hpp"
#include "outbox/storage/sqlite/options.hpp"

namespace outbox::detail::sqlite {

inline constexpr int schema_version = 5;

inline constexpr std::string_view schema_sql = R"sql(
CREATE TABLE IF NOT EXISTS outbox_meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS outbox_events (
  seq          INTEGER PRIMARY KEY,
  id           BLOB    NOT NULL,
  type         TEXT    NOT NULL,
  entity_id    TEXT    NOT NULL,
  entity_type  TEXT    NOT NULL,
  ordering_key TEXT    NOT NULL,
  user_id      TEXT    NOT NULL,
  payload      BLOB    NOT NULL,
  priority     INTEGER NOT NULL,
  status       INTEGER NOT NULL,
  attempts     INTEGER NOT NULL,
  max_attempts INTEGER NOT NULL,
  created_at   INTEGER NOT NULL,
  updated_at   INTEGER NOT NULL,
  retry_after  INTEGER NOT NULL,
  completed_at INTEGER NOT NULL,
  last_error   TEXT    NOT NULL,
  remote_id    TEXT    NOT NULL,
  lease        INTEGER NOT NULL,
  lease_until  INTEGER NOT NULL
);
-- UUID-v7 ids arrive in time order, so this unique index grows at its right edge.
CREATE UNIQUE INDEX IF NOT EXISTS outbox_events_by_id ON outbox_events(id);
-- Each ordering key's events in append order: finds a line's next head from where the line
-- stood (a seek, then the next undelivered entry). Deliberately not partial on status: a status
-- change (claim, outcome) then leaves it alone, where a partial index rewrites the key's leaf,
-- one scattered page per event and commit. (Schema 1 had it partial; schema_migration migrates it.)
CREATE INDEX IF NOT EXISTS outbox_events_line ON outbox_events(user_id, ordering_key, seq);
-- Claims in flight by lease end: expired leases without a scan.
CREATE INDEX IF NOT EXISTS outbox_events_leases ON outbox_events(lease_until) WHERE status = 1;
-- Events by status, then user, in append order: counts of the statuses an event leaves (pending,
-- processing, failed, dead) cost what is waiting, not the whole history; dead and late events are
-- found without a scan; a user's page of one status is one range. Status leads, so the queries
-- that name no user use it too. (Schema 2 led with user_id; schema_migration migrates it.)
CREATE INDEX IF NOT EXISTS outbox_events_status ON outbox_events(status, user_id, seq);
-- The audit queries: an entity's events, and a type's, in append order. Neither column changes
-- after the append but a replaced event's type, so claims and outcomes leave these alone.
-- (Schema 4 and before had neither; schema_sql adds them to an older database.)
CREATE INDEX IF NOT EXISTS outbox_events_entity ON outbox_events(entity_id, seq);
CREATE INDEX IF NOT EXISTS outbox_events_type ON outbox_events(type, seq);
-- How many completed events each user has. Completed events are the audit trail and grow until
-- purged, so they are counted where they change (an outcome recorded, a purge), in the same
-- transaction, rather than counted again by every stats() call.
CREATE TABLE IF NOT EXISTS outbox_completed (
  user_id TEXT    PRIMARY KEY,
  n       INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per ordering key that has undelivered events: where its head stands.
-- state 0: head ready; 1: head failed, claimable from ready_at; 2: an event of the key in flight.
CREATE TABLE IF NOT EXISTS outbox_keys (
  user_id      TEXT    NOT NULL,
  ordering_key TEXT    NOT NULL,
  state        INTEGER NOT NULL,
  priority     INTEGER NOT NULL,
  head_seq     INTEGER NOT NULL,
  ready_at     INTEGER NOT NULL,
  PRIMARY KEY (user_id, ordering_key)
) WITHOUT ROWID;
-- Ready heads in claim order, and failed heads by retry time. Each holds only the lines in its
-- state, so a line's trip through a delivery (0 -> 2 when claimed, 2 -> 0 for its next head)
-- touches the first index once each way and the second not at all, where full indexes took a
-- delete and an insert in both every time.
-- `state` stays a column so the reads are covered. (Schema 3 and before had them full.)
CREATE INDEX IF NOT EXISTS outbox_keys_claim ON outbox_keys(user_id, state, priority DESC, head_seq) WHERE state = 0;
CREATE INDEX IF NOT EXISTS outbox_keys_due ON outbox_keys(user_id, state, ready_at) WHERE state = 1;

CREATE TABLE IF NOT EXISTS outbox_entities (
  collection  TEXT    NOT NULL,
  id          TEXT    NOT NULL,
  user_id     TEXT    NOT NULL,
  natural_key TEXT,
  payload     BLOB    NOT NULL,
  occurred_at INTEGER NOT NULL,
  sync        INTEGER NOT NULL,
  remote_id   TEXT    NOT NULL,
  sync_error  TEXT    NOT NULL,
  last_event  BLOB,
  version     INTEGER NOT NULL,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL,
  PRIMARY KEY (collection, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS outbox_entities_natural ON outbox_entities(collection, user_id, natural_key)
  WHERE natural_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_entities_time ON outbox_entities(collection, user_id, occurred_at, id);
)sql";

/// Brings one connection's database to `schema_version`. `owned`: the storage opened the
/// connection, so its journal mode, sync mode and `PRAGMA user_version` are the storage's to set
/// (on an adopted connection they are the application's).
struct schema_migration {
  sqlite3* db;
  bool owned;
  std::string_view path;  // names the database in errors; empty for an unnamed one

  /// Every step in order. The caller holds the connection. A newer schema is refused before
  /// the journal mode is set: switching to WAL rewrites the database header, and a refused
  /// database is left byte-identical.
  result<void> run(const sqlite_options& options) {
    sqlite3_busy_timeout(db, static_cast<int>(options.busy_timeout.count()));
    sqlite3_extended_result_codes(db, 1);
    auto stored = refuse_newer();
    if (!stored) return stored.error();
    if (owned) {
      if (auto set = set_modes(options); !set) return set;
    }
    return migrate(*stored);
  }

  result<void> exec(std::string_view sql, std::string_view what) { return sqlite::exec(db, sql, what, path); }

  /// A one-off query's value; its errors name the database, as exec's do.
  result<std::int64_t> read(std::string_view sql, std::string_view what) {
    auto value = scalar(db, sql, what);
    if (!value && !path.empty())
      return outbox::error(value.error().code, std::string(path) + ": " + value.error().message);
    return value;
  }

  result<void> set_modes(const sqlite_options& options) {
    if (auto mode = exec("PRAGMA journal_mode=WAL", "enabling WAL"); !mode) return mode;
    const char* sync = options.synchronous == sqlite_options::sync_mode::full     ? "PRAGMA synchronous=FULL"
                       : options.synchronous == sqlite_options::sync_mode::normal ? "PRAGMA synchronous=NORMAL"
                                                                                  : "PRAGMA synchronous=OFF";
    return exec(sync, "setting synchronous");
  }

  /// The schema version the database holds (none if it has no outbox schema yet); a newer one
  /// than this library's is refused with `errc::schema_too_new`, the database left unchanged.
  result<std::optional<std::int64_t>> refuse_newer() {
    auto has_meta = read("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='outbox_meta'",
                         "reading the schema");
    if (!has_meta) return has_meta.error();
    std::optional<std::int64_t> stored_version;
    if (*has_meta) {
      auto version = read("SELECT CAST(value AS INTEGER) FROM outbox_meta WHERE key='schema_version'",
                          "reading the schema version");
      if (!version) return version.error();
      if (*version > schema_version)
        return outbox::error(errc::schema_too_new,
                             (path.empty() ? std::string("database") : std::string(path)) +
                                 " has outbox schema version " + std::to_string(*version) +
                                 ", this library understands up to " + std::to_string(schema_version) +
                                 "; it was left unchanged");
      stored_version = *version;
    }
    if (owned) {
      auto user_version = read("PRAGMA user_version", "reading user_version");
      if (!user_version) return user_version.error();
      if (*user_version > schema_version)
        return outbox::error(errc::schema_too_new, std::string(path) + " has user_version " +
                                                       std::to_string(*user_version) + "; it was left unchanged");
    }
    return stored_version;
  }

  /// Runs the migration in its own transaction, or inside the application's if one is open.
  result<void> migrate(std::optional<std::int64_t> stored_version) {
    const bool in_app_transaction = sqlite3_get_autocommit(db) == 0;
    if (!in_app_transaction) {
      if (auto b = exec("BEGIN IMMEDIATE", "starting the schema migration"); !b) return b;
    }
    result<void> migrated = migrate_steps(stored_version);
    if (in_app_transaction) return migrated;
    if (!migrated) {
      (void)exec("ROLLBACK", "rolling back the migration");
      return migrated;
    }
    return exec("COMMIT", "committing the schema");
  }

  /// From the stored version (none: a new database) to `schema_version`.
  result<void> migrate_steps(std::optional<std::int64_t> stored_version) {
    result<void> migrated;
    if (stored_version && *stored_version < 2) {
      // Schema 1's line index was partial on status; schema_sql creates the full one.
      migrated = exec("DROP INDEX IF EXISTS outbox_events_line", "migrating the line index to schema 2");
    }
    const bool before_3 = stored_version && *stored_version < 3;
    if (migrated && before_3) {
      // Schema 2's status index led with user_id; schema_sql creates the one led by status.
      migrated = exec("DROP INDEX IF EXISTS outbox_events_by_status", "migrating the status index to schema 3");
    }
    if (migrated && stored_version && *stored_version < 4) {
      // Schema 3's line indexes were full; schema_sql creates the partial ones.
      migrated = exec("DROP INDEX IF EXISTS outbox_keys_claim; DROP INDEX IF EXISTS outbox_keys_due",
                      "migrating the line indexes to schema 4");
    }
    if (migrated) migrated = exec(schema_sql, "creating the outbox schema");
    if (migrated && before_3) {
      // Schema 3 counts completed events as they complete; the ones before it, once here.
      migrated = exec("DELETE FROM outbox_completed; INSERT INTO outbox_completed(user_id, n) "
                      "SELECT user_id, count(*) FROM outbox_events WHERE status = 2 GROUP BY user_id",
                      "counting completed events for schema 3");
    }
    if (migrated) {
      migrated = exec("INSERT INTO outbox_meta(key, value) VALUES('schema_version', '" +
                          std::to_string(schema_version) + "') ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                      "recording the schema version");
    }
    if (migrated && owned) {
      migrated = exec("PRAGMA user_version = " + std::to_string(schema_version), "setting user_version");
    }
    return migrated;
  }
};

}  // namespace outbox::detail::sqlite
