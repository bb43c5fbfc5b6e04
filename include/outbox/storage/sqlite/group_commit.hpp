#pragma once
/// \file
/// Group commit on the SQLite connection: detail/connection_transactions.hpp's
/// `transaction_group` over SQLite's statements (BEGIN IMMEDIATE, COMMIT, a savepoint per
/// member when one fails). Each member's status changes move the stats cache once its
/// transaction committed; a write that joins the application's transaction cannot follow it, so
/// the cache is counted again.

#include <sqlite3.h>

#include <mutex>

#include "outbox/detail/connection_transactions.hpp"
#include "outbox/error.hpp"
#include "outbox/storage/sqlite/connection.hpp"

namespace outbox::detail::sqlite {

/// SQLite's steps for `transaction_group`.
struct group_engine {
  connection* c;

  struct member_data {
    status_tally changes;  // what the member's work changed, applied to the stats cache once committed
  };

  std::unique_lock<std::mutex> lock_connection() { return c->lock_connection(); }
  [[nodiscard]] bool group_commit() const noexcept { return c->options.group_commit; }
  // Inside this thread's transaction_guard, or the application's own transaction on an
  // adopted connection.
  [[nodiscard]] bool in_application_transaction() const noexcept { return sqlite3_get_autocommit(c->db) == 0; }
  void joining_application() noexcept { c->waiting.valid = false; }
  result<void> begin() { return step_done(c->begin, c->db, "BEGIN IMMEDIATE"); }
  result<void> commit() { return step_done(c->commit_tx, c->db, "COMMIT"); }
  void rollback() { (void)step_done(c->rollback_tx, c->db, "ROLLBACK"); }
  result<void> savepoint() { return step_done(c->savepoint, c->db, "SAVEPOINT"); }
  result<void> rollback_to_savepoint() { return step_done(c->rollback_to, c->db, "ROLLBACK TO"); }
  result<void> release_savepoint() { return step_done(c->release, c->db, "RELEASE"); }
  [[nodiscard]] static bool lost() noexcept { return false; }
  [[nodiscard]] static bool runs_alone(const member_data& /*m*/) noexcept { return false; }
  [[nodiscard]] static bool retry(const error& /*e*/, int /*tries*/) noexcept { return false; }
  void enter(member_data& m) noexcept {
    m.changes.deltas.clear();
    c->tally_target = &m.changes;
  }
  void leave() noexcept { c->tally_target = nullptr; }
  void committed(const member_data& m) noexcept {
    if (!c->waiting.valid) return;
    try {
      c->waiting.apply(m.changes);
    } catch (...) {  // out of memory: the next stats() counts again
      c->waiting.valid = false;
    }
  }
};

using group_commit = outbox::detail::transaction_group<group_engine>;

}  // namespace outbox::detail::sqlite
