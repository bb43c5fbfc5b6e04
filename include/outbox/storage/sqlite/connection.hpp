#pragma once
/// \file
/// What every part of the SQLite storage works on: the connection, its prepared statements, who
/// may use it when, and the counting each write ends with.

#include <sqlite3.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage/sqlite/handle.hpp"
#include "outbox/storage/sqlite/options.hpp"
#include "outbox/storage/sqlite/statements.hpp"
#include "outbox/storage/sqlite/stats_cache.hpp"

namespace outbox::detail::sqlite {

/// The connection and its statements. The parts of the storage build on it in layers, each one
/// job: claim.hpp (the claim engine) < maintenance.hpp < entities.hpp < reads.hpp < state.hpp.
struct connection : statements {
  connection_handle handle;  // closes the connection when the storage opened it
  sqlite3* db;
  std::string path;
  sqlite_options options;
  std::mutex db_mutex;  // one user of the connection at a time
  // A transaction_guard's transaction belongs to the thread that opened it: that thread's
  // writes join it, every other thread's reads and writes wait until it ends.
  std::condition_variable txn_cv;
  std::thread::id txn_owner{};

  waiting_counts waiting;
  status_tally* tally_target = nullptr;  // the running group member's tally; null outside a group

  connection(sqlite3* opened, bool owns, std::string file, sqlite_options o)
      : handle(opened, owns), db(opened), path(std::move(file)), options(o) {}
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection() { finalize(); }  // statements before the connection closes

  /// Locks the connection once no other thread's application transaction is open on it.
  std::unique_lock<std::mutex> lock_connection() {
    std::unique_lock lock(db_mutex);
    const auto self = std::this_thread::get_id();
    txn_cv.wait(lock, [&] { return txn_owner == std::thread::id() || txn_owner == self; });
    return lock;
  }

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
