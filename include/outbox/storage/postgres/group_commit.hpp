#pragma once
/// \file
/// Group commit on the PostgreSQL connection: concurrent writers of one storage queue their
/// work, one of them (the leader) runs the queued work of all in one transaction with one
/// COMMIT, and each caller returns once the commit that made its work durable is done. The
/// leader/follower protocol, its gathering rule and the member queue are detail/group_commit.hpp's;
/// this file supplies PostgreSQL's transaction (BEGIN, the members' statements, COMMIT; a
/// savepoint per member when one fails). A write called inside an application's transaction on this connection joins
/// that transaction in a savepoint instead.

#include <libpq-fe.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

#include "outbox/detail/group_commit.hpp"
#include "outbox/error.hpp"
#include "outbox/storage/postgres/link.hpp"

namespace outbox::detail::postgres {

class group_commit {
 public:
  explicit group_commit(link& l) noexcept : l_(l) {}
  group_commit(const group_commit&) = delete;
  group_commit& operator=(const group_commit&) = delete;

  std::atomic<std::uint64_t> commits{0};  ///< commits that served a group
  std::atomic<std::uint64_t> writes{0};   ///< callers served

  /// How a member's work talks to the server.
  enum class shape : std::uint8_t {
    one_round_trip,  ///< one pipeline: atomic on its own (one implicit transaction)
    several,         ///< several round trips: needs a transaction around them
  };

  /// Runs `work` in a transaction and returns once that transaction committed (or failed). A
  /// member alone in its group whose work is `one_round_trip` runs without BEGIN and COMMIT:
  /// its pipeline is its own transaction, so a lone append costs one round trip, not three.
  template <class F>
  result<void> write(F&& work, shape how = shape::several) {
    writes.fetch_add(1, std::memory_order_relaxed);
    // While a group's transaction is open there is no application transaction to join: go
    // straight to the queue rather than wait out that commit on the connection's lock (and then
    // miss the next group). The same reasoning as the SQLite storage's group commit.
    if (!group_open_.load(std::memory_order_acquire)) {
      auto lock = l_.lock_connection();
      if (in_application_transaction()) return in_savepoint(work);
    }
    item member{std::function<result<void>()>(std::ref(work)), {}, how};
    if (!l_.options.group_commit) {
      auto lock = l_.lock_connection();
      run_group_locked({&member});
      return member.outcome;
    }
    // A deadlock with another process's transaction (40P01) rolls the group back; the server
    // chose it as the victim, and the same work goes through once the other one is done.
    for (int tries = 1;; ++tries) {
      queue_.submit(member, [this](std::vector<item*>& items) {
        auto lock = l_.lock_connection();
        group_open_.store(true, std::memory_order_release);
        run_group_locked(items);
        group_open_.store(false, std::memory_order_release);
      });
      if (member.outcome || tries == 3 ||
          member.outcome.error().code != make_error_code(postgres_errc::serialization_failure))
        return member.outcome;
    }
  }

 private:
  struct item {
    std::function<result<void>()> work;  // may run twice (see run_group_locked): overwrites its outputs
    result<void> outcome;
    shape how = shape::several;
  };

  /// The connection is inside a transaction the storage did not open: this thread's
  /// transaction_guard, or the application's own BEGIN on an adopted connection.
  [[nodiscard]] bool in_application_transaction() const noexcept {
    if (!l_.conn() || l_.broken) return false;
    const auto st = PQtransactionStatus(l_.conn());
    return st == PQTRANS_INTRANS || st == PQTRANS_INERROR;
  }

  result<void> exec(std::string_view sql, std::string_view what) {
    auto r = l_.run_one({sql, {}}, what);
    if (!r) return r.error();
    return {};
  }

  template <class W>
  result<void> in_savepoint(W& work) {
    if (auto s = exec("SAVEPOINT outbox_write", "SAVEPOINT"); !s) return s;
    result<void> done;
    try {
      done = work();
    } catch (...) {
      done = error(errc::storage_failure, "exception inside a storage write");
    }
    if (!done) {
      (void)exec("ROLLBACK TO SAVEPOINT outbox_write", "ROLLBACK TO SAVEPOINT");
      if (l_.broken) return done;
    }
    if (auto r = exec("RELEASE SAVEPOINT outbox_write", "RELEASE SAVEPOINT"); !r && done) return r;
    return done;
  }

  /// One transaction for the group. First every member straight in; if one fails (and it was
  /// not alone), the transaction is rolled back and the group runs again with a savepoint per
  /// member, so a failure undoes only its own work. Every member's work may run twice.
  void run_group_locked(const std::vector<item*>& group) {
    auto settle_all = [&](const result<void>& r) {
      for (auto* member : group) member->outcome = r;
    };
    if (group.size() == 1 && group.front()->how == shape::one_round_trip) {
      group.front()->outcome = run_member(*group.front());
      if (group.front()->outcome) commits.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (auto b = exec("BEGIN", "BEGIN"); !b) return settle_all(b);
    bool all = true;
    for (auto* member : group) {
      member->outcome = run_member(*member);
      if (!member->outcome) {
        all = false;
        break;
      }
    }
    bool any = all;
    if (!all) {
      rollback();
      if (l_.broken) {  // the connection is gone: every member fails with the first failure
        result<void> first;
        for (auto* member : group)
          if (!member->outcome) first = member->outcome;
        return settle_all(first);
      }
      if (group.size() == 1) return;
      if (auto b = exec("BEGIN", "BEGIN"); !b) return settle_all(b);
      for (auto* member : group) {
        member->outcome = in_savepoint(member->work);
        any = any || member->outcome.has_value();
        if (l_.broken) return settle_all(member->outcome);
      }
    }
    if (!any) return rollback();
    const result<void> committed = exec("COMMIT", "COMMIT");
    if (!committed) {
      rollback();
    } else {
      commits.fetch_add(1, std::memory_order_relaxed);
    }
    for (auto* member : group)
      if (member->outcome) member->outcome = committed;
  }

  /// Ends the transaction without its work; nothing to do on a connection that broke (the
  /// server rolled it back).
  void rollback() {
    if (!l_.broken) (void)exec("ROLLBACK", "ROLLBACK");
  }

  static result<void> run_member(item& member) {
    try {
      return member.work();
    } catch (...) {
      return error(errc::storage_failure, "exception inside a storage write");
    }
  }

  link& l_;
  outbox::detail::member_queue<item> queue_{
      {std::chrono::microseconds(200), outbox::detail::group_commit::expectation::outstanding}};
  std::atomic<bool> group_open_{false};  // a leader's transaction is open on the connection
};

}  // namespace outbox::detail::postgres
