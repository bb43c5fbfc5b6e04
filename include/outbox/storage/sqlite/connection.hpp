#pragma once
/// \file
/// What every part of the SQLite storage works on: the connection, its prepared statements, who
/// may use it when, and the counting each write ends with.

#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "outbox/detail/connection_transactions.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage/sqlite/handle.hpp"
#include "outbox/storage/sqlite/options.hpp"
#include "outbox/storage/sqlite/statements.hpp"
#include "outbox/storage/sqlite/stats_cache.hpp"

namespace outbox::detail::sqlite {

/// The connection and its statements. The parts of the storage build on it in layers, each one
/// job: claim.hpp (the claim engine) < maintenance.hpp < entities.hpp < reads.hpp < state.hpp.
struct connection : statements, connection_gate {
  connection_handle handle;  // closes the connection when the storage opened it
  sqlite3* db;
  std::string path;
  sqlite_options options;

  waiting_counts waiting;
  status_tally* tally_target = nullptr;  // the running group member's tally; null outside a group

  connection(sqlite3* opened, bool owns, std::string file, sqlite_options o)
      : handle(opened, owns), db(opened), path(std::move(file)), options(o) {}
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection() { finalize(); }  // statements before the connection closes

  // The application transaction of a transaction_guard (connection_gate: its thread's writes
  // join it, every other thread's reads and writes wait until it ends).
  result<void> begin_application() {
    const int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return failure(db, rc, "BEGIN");
    return {};
  }
  result<void> commit_application() {
    const int rc = sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return failure(db, rc, "COMMIT");
    return {};
  }
  void rollback_application() noexcept { sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr); }

  /// Ends a write's counting: its completed events counted in outbox_completed, in its
  /// transaction; all of its status changes handed to the group member it runs for, whose
  /// commit applies them to `waiting`.
  result<void> apply_counts(const status_tally& tally) {
    for (const auto& d : tally.deltas) {
      if (d.status != static_cast<int>(status::completed) || d.delta == 0) continue;
      add_completed.bind(1, std::string_view(d.user)).bind(2, d.delta);
      if (auto done = step_done(add_completed, db, "counting completed events"); !done) return done;
    }
    if (tally_target)
      for (const auto& d : tally.deltas) tally_target->add(d.user, static_cast<status>(d.status), d.delta);
    return {};
  }
};

}  // namespace outbox::detail::sqlite
