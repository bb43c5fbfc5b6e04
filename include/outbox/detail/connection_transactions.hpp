#pragma once
/// \file
/// What the storages that write through one database connection (SQLite, PostgreSQL) share,
/// written once:
///
/// - `connection_gate`: who may use the connection when. One user at a time; an application
///   transaction belongs to the thread that opened it, and every other thread waits until it
///   ends.
/// - `application_transaction`: the RAII guard of such a transaction (`transaction()` of each
///   storage): rolls back unless `commit()` succeeded.
/// - `transaction_group`: group commit over the connection. Concurrent writers queue their
///   work; one of them (the leader) runs the queued work of all in one transaction with one
///   COMMIT, and each returns once the commit that made its work durable is done. The
///   leader/follower protocol and its gathering rule are detail/group_commit.hpp's. A write
///   called inside an application transaction joins it in a savepoint instead.
///
/// A database supplies its statements as an `Engine` (called with the connection locked):
///
///     std::unique_lock<std::mutex> lock_connection();
///     bool group_commit();                   // options: share transactions among writers
///     bool in_application_transaction();     // inside a transaction the storage did not open
///     void joining_application();            // a write is about to join such a transaction
///     result<void> begin(), commit(), savepoint(), rollback_to_savepoint(), release_savepoint();
///     void rollback();                       // also after a failed commit
///     bool lost();                           // the connection broke: the server rolled back
///     bool runs_alone(const member_data&);   // a lone member needs no BEGIN/COMMIT
///     void enter(member_data&); void leave(); // around each run of a member's work
///     void committed(const member_data&) noexcept; // a member's work is durable
///     bool retry(const error&, int tries);    // run a failed write again (a deadlock victim)
///     using member_data = ...;               // what the database keeps per member

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "outbox/detail/group_commit.hpp"
#include "outbox/error.hpp"

namespace outbox::detail {

/// One user of a connection at a time; an application transaction's thread before all others.
struct connection_gate {
  std::mutex mutex;
  std::condition_variable txn_cv;  // an application transaction ended
  std::thread::id txn_owner{};     // the thread whose application transaction is open

  /// Locks the connection once no other thread's application transaction is open on it.
  std::unique_lock<std::mutex> lock_connection() {
    std::unique_lock lock(mutex);
    const auto self = std::this_thread::get_id();
    txn_cv.wait(lock, [&] { return txn_owner == std::thread::id() || txn_owner == self; });
    return lock;
  }
};

/// An application transaction on a storage's connection. `Database` is a `connection_gate`
/// with `result<void> begin_application()`, `result<void> commit_application()` and
/// `void rollback_application() noexcept`, called with the connection locked.
template <class Database>
class application_transaction {
 public:
  /// Throws `outbox::exception` when the transaction cannot begin.
  explicit application_transaction(Database& db) : db_(&db) {
    auto lock = db.lock_connection();
    if (auto begun = db.begin_application(); !begun) throw_error(begun.error());
    db.txn_owner = std::this_thread::get_id();
    open_ = true;
  }
  application_transaction(const application_transaction&) = delete;
  application_transaction& operator=(const application_transaction&) = delete;
  ~application_transaction() { rollback(); }

  /// Commits; on failure the transaction is rolled back and nothing of it is stored.
  result<void> commit() {
    if (!open_) return error(errc::invalid_state, "transaction already finished");
    std::unique_lock lock(db_->mutex);
    auto committed = db_->commit_application();
    if (!committed) db_->rollback_application();
    finish(lock);
    return committed;
  }

  void rollback() noexcept {
    if (!open_) return;
    std::unique_lock lock(db_->mutex);
    db_->rollback_application();
    finish(lock);
  }

 private:
  void finish(std::unique_lock<std::mutex>& lock) noexcept {
    open_ = false;
    db_->txn_owner = std::thread::id();
    lock.unlock();
    db_->txn_cv.notify_all();
  }

  Database* db_;
  bool open_ = false;
};

/// Group commit over one connection; see the file's comment for `Engine`.
template <class Engine>
class transaction_group {
 public:
  using member_data = typename Engine::member_data;

  explicit transaction_group(Engine engine) : e_(std::move(engine)) {}
  transaction_group(const transaction_group&) = delete;
  transaction_group& operator=(const transaction_group&) = delete;

  std::atomic<std::uint64_t> commits{0};  ///< commits that served a group
  std::atomic<std::uint64_t> writes{0};   ///< callers served

  /// Runs `work` in a transaction and returns once that transaction is durable (or failed).
  /// `work` may run twice (see run_locked): it must overwrite its outputs, never append.
  template <class F>
  result<void> write(F&& work, member_data data = {}) {
    writes.fetch_add(1, std::memory_order_relaxed);
    // While a group's transaction is open the connection holds no other, so there is none to
    // join: go straight to the queue. (Checking would wait out that whole commit on the
    // connection's lock; writers released by the last commit would then queue only after the
    // next leader had taken the queue, and groups would split in two.)
    if (!group_open_.load(std::memory_order_acquire)) {
      auto lock = e_.lock_connection();
      if (e_.in_application_transaction()) {
        e_.joining_application();
        member joined{std::function<result<void>()>(std::ref(work)), {}, std::move(data)};
        return in_savepoint(joined);
      }
    }
    member m{std::function<result<void>()>(std::ref(work)), {}, std::move(data)};
    for (int tries = 1;; ++tries) {
      if (!e_.group_commit()) {
        auto lock = e_.lock_connection();
        const open_marker open{group_open_};
        run_locked({&m});
      } else {
        queue_.submit(m, [this](std::vector<member*>& group) {
          auto lock = e_.lock_connection();
          const open_marker open{group_open_};
          run_locked(group);
        });
      }
      if (m.outcome || !e_.retry(m.outcome.error(), tries)) return m.outcome;
    }
  }

 private:
  struct member {
    std::function<result<void>()> work;
    result<void> outcome;
    member_data data;
  };

  /// Sets `group_open_` for its lifetime, whatever way the group's run ends.
  struct open_marker {
    std::atomic<bool>& flag;
    explicit open_marker(std::atomic<bool>& f) : flag(f) { flag.store(true, std::memory_order_release); }
    ~open_marker() { flag.store(false, std::memory_order_release); }
    open_marker(const open_marker&) = delete;
    open_marker& operator=(const open_marker&) = delete;
  };

  result<void> run(member& m) {
    e_.enter(m.data);
    result<void> done;
    try {
      done = m.work();
    } catch (...) {
      done = error(errc::storage_failure, "exception inside a storage write");
    }
    e_.leave();
    return done;
  }

  result<void> in_savepoint(member& m) {
    if (auto s = e_.savepoint(); !s) return s;
    result<void> done = run(m);
    if (!done) {
      (void)e_.rollback_to_savepoint();
      if (e_.lost()) return done;
    }
    if (auto released = e_.release_savepoint(); !released && done) return released;
    return done;
  }

  /// One transaction for the group; every member gets its own outcome, or the commit's failure.
  ///
  /// First pass: every member straight into the transaction, without savepoints (a savepoint
  /// costs: SQLite copies each page a member changes into a statement sub-journal). If a
  /// member fails, the transaction is rolled back and, unless that member was alone, the group
  /// runs again with a savepoint per member, so a failure undoes only its own work. A
  /// connection that broke fails every member with the first failure.
  void run_locked(const std::vector<member*>& group) {
    auto settle_all = [&](const result<void>& r) {
      for (auto* m : group) m->outcome = r;
    };
    if (group.size() == 1 && e_.runs_alone(group.front()->data)) {
      member& m = *group.front();
      m.outcome = run(m);
      if (m.outcome) {
        commits.fetch_add(1, std::memory_order_relaxed);
        e_.committed(m.data);
      }
      return;
    }
    if (auto b = e_.begin(); !b) return settle_all(b);
    bool any = true;
    for (auto* m : group) {
      m->outcome = run(*m);
      if (!m->outcome) {
        any = false;
        break;
      }
    }
    if (!any) {
      e_.rollback();
      if (e_.lost()) {
        for (auto* m : group)
          if (!m->outcome) return settle_all(result<void>(m->outcome));
      }
      if (group.size() == 1) return;
      if (auto b = e_.begin(); !b) return settle_all(b);
      for (auto* m : group) {
        m->outcome = in_savepoint(*m);
        any = any || m->outcome.has_value();
        if (e_.lost()) return settle_all(result<void>(m->outcome));
      }
      if (!any) return e_.rollback();
    }
    const result<void> committed = e_.commit();
    if (!committed) {
      e_.rollback();
    } else {
      commits.fetch_add(1, std::memory_order_relaxed);
      for (auto* m : group)
        if (m->outcome) e_.committed(m->data);
    }
    for (auto* m : group)
      if (m->outcome) m->outcome = committed;
  }

  Engine e_;
  member_queue<member> queue_{{std::chrono::microseconds(200), group_commit::expectation::outstanding}};
  std::atomic<bool> group_open_{false};  // a leader's transaction is open on the connection
};

}  // namespace outbox::detail
