#pragma once
/// \file
/// Group commit on the PostgreSQL connection: detail/connection_transactions.hpp's
/// `transaction_group` over PostgreSQL's statements (BEGIN, the members' statements, COMMIT; a
/// savepoint per member when one fails). A member alone in its group whose work is one pipeline
/// runs without BEGIN and COMMIT: the pipeline is its own transaction, so a lone append costs
/// one round trip, not three. A group chosen as a deadlock's victim (40P01) runs again.

#include <libpq-fe.h>

#include <cstdint>
#include <mutex>

#include "outbox/detail/connection_transactions.hpp"
#include "outbox/error.hpp"
#include "outbox/storage/postgres/errors.hpp"
#include "outbox/storage/postgres/link.hpp"

namespace outbox::detail::postgres {

/// How a member's work talks to the server.
enum class write_shape : std::uint8_t {
  one_round_trip,  ///< one pipeline: atomic on its own (one implicit transaction)
  several,         ///< several round trips: needs a transaction around them
};

/// PostgreSQL's steps for `transaction_group`.
struct group_engine {
  link* l;

  struct member_data {
    write_shape how = write_shape::several;
  };

  std::unique_lock<std::mutex> lock_connection() { return l->lock_connection(); }
  [[nodiscard]] bool group_commit() const noexcept { return l->options.group_commit; }
  /// The connection is inside a transaction the storage did not open: this thread's
  /// transaction_guard, or the application's own BEGIN on an adopted connection.
  [[nodiscard]] bool in_application_transaction() const noexcept {
    if (!l->conn() || l->broken) return false;
    const auto st = PQtransactionStatus(l->conn());
    return st == PQTRANS_INTRANS || st == PQTRANS_INERROR;
  }
  static void joining_application() noexcept {}
  result<void> begin() { return l->statement("BEGIN"); }
  result<void> commit() { return l->statement("COMMIT"); }
  /// Ends the transaction without its work; nothing to do on a connection that broke (the
  /// server rolled it back).
  void rollback() {
    if (!l->broken) (void)l->statement("ROLLBACK");
  }
  result<void> savepoint() { return l->statement("SAVEPOINT outbox_write"); }
  result<void> rollback_to_savepoint() { return l->statement("ROLLBACK TO SAVEPOINT outbox_write"); }
  result<void> release_savepoint() { return l->statement("RELEASE SAVEPOINT outbox_write"); }
  [[nodiscard]] bool lost() const noexcept { return l->broken; }
  [[nodiscard]] static bool runs_alone(const member_data& m) noexcept { return m.how == write_shape::one_round_trip; }
  /// The server chose this group as a deadlock's victim: the same work goes through once the
  /// other transaction is done.
  [[nodiscard]] static bool retry(const error& e, int tries) noexcept {
    return tries < 3 && e.code == make_error_code(postgres_errc::serialization_failure);
  }
  static void enter(member_data& /*m*/) noexcept {}
  static void leave() noexcept {}
  static void committed(const member_data& /*m*/) noexcept {}
};

using group_commit = outbox::detail::transaction_group<group_engine>;

}  // namespace outbox::detail::postgres
