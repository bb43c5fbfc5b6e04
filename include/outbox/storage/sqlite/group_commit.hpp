#pragma once
/// \file
/// Group commit on the SQLite connection: concurrent writers queue their work, one of them (the
/// leader) runs the queued work of all in one transaction with one sync, and each caller returns
/// once the commit that made its work durable is done. The leader/follower protocol, its
/// gathering rule and the member queue are detail/group_commit.hpp's; this file supplies
/// SQLite's transaction (one per group, a savepoint per member when one fails). A write called inside an
/// application's transaction on this connection joins that transaction instead.

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

#include "outbox/detail/group_commit.hpp"
#include "outbox/error.hpp"
#include "outbox/storage/sqlite/connection.hpp"

namespace outbox::detail::sqlite {

/// Callers queue their work; one of them leads a transaction for all queued.
class group_commit {
 public:
  explicit group_commit(connection& c) noexcept : c_(c) {}
  group_commit(const group_commit&) = delete;
  group_commit& operator=(const group_commit&) = delete;

  std::atomic<std::uint64_t> commits{0};  ///< commits that served a group
  std::atomic<std::uint64_t> writes{0};   ///< callers served

  /// Runs `work` in a transaction and returns once that transaction is durable (or failed).
  template <class F>
  result<void> write(F&& work) {
    writes.fetch_add(1, std::memory_order_relaxed);
    // While a group's transaction is open the connection can hold no other, so there is none
    // to join: go straight to the queue. (Checking would wait out that whole commit, sync
    // included, on the connection's lock; writers released by the last commit would then queue
    // only after the next leader had taken the queue, and groups would split in two.)
    if (!group_open_.load(std::memory_order_acquire)) {
      auto lock = c_.lock_connection();
      if (sqlite3_get_autocommit(c_.db) == 0) {
        // Inside this thread's transaction_guard, or the application's own transaction on an
        // adopted connection: join it; it commits or rolls back with the application's rows,
        // and the kept counts cannot follow it.
        c_.waiting.valid = false;
        return in_savepoint(work);
      }
    }
    write_item item{std::function<result<void>()>(std::ref(work)), {}, {}};
    if (!c_.options.group_commit) {
      auto lock = c_.lock_connection();
      const group_marker open{group_open_};
      run_group_locked({&item});
      return item.outcome;
    }
    return queue_and_wait(item);
  }

 private:
  struct write_item {
    std::function<result<void>()> work;  // may run twice (see run_group_locked): must overwrite its outputs
    result<void> outcome;
    status_tally changes;  // what `work` changed, applied to the stats cache once committed
  };

  /// Sets `group_open_` for its lifetime, whatever way the group's run ends.
  struct group_marker {
    std::atomic<bool>& flag;
    explicit group_marker(std::atomic<bool>& f) : flag(f) { flag.store(true, std::memory_order_release); }
    ~group_marker() { flag.store(false, std::memory_order_release); }
    group_marker(const group_marker&) = delete;
    group_marker& operator=(const group_marker&) = delete;
  };

  /// Queues `item`; leads a group when no one else does, else waits for the leader that ran it.
  /// A new leader gathers, for at most 200 µs, the writers the last commit released and those
  /// that queued during it. A SQLite group settles each member with its own outcome.
  result<void> queue_and_wait(write_item& item) {
    queue_.submit(item, [this](std::vector<write_item*>& items) {
      auto db_lock = c_.lock_connection();
      const group_marker open{group_open_};
      run_group_locked(items);
    });
    return item.outcome;
  }

  template <class F>
  result<void> in_savepoint(F& work) {
    if (auto s = step_done(c_.savepoint, c_.db, "SAVEPOINT"); !s) return s;
    result<void> done;
    try {
      done = work();
    } catch (...) {
      done = error(errc::storage_failure, "exception inside a storage write");
    }
    if (!done) {
      (void)step_done(c_.rollback_to, c_.db, "ROLLBACK TO");
    }
    (void)step_done(c_.release, c_.db, "RELEASE");
    return done;
  }

  /// One transaction for the group; gives every member its own outcome, or the commit's
  /// failure. Members read their outcome once the group commit settles them, under the
  /// queue's mutex.
  ///
  /// First pass: every member straight into the transaction, without savepoints. A savepoint
  /// makes SQLite copy each page a member changes into a statement sub-journal (spilled to a
  /// temporary file past 64 KiB, an open, write and unlink per call), which is pure cost when
  /// nobody fails. If a member fails, the transaction is rolled back and the group runs again
  /// with a savepoint per member, so the failure undoes only its own work. (Alone in its
  /// group, a member needs no second pass: the rollback undoes exactly its work.) Every
  /// write's work may therefore run twice; each one overwrites its outputs, never appends.
  void run_group_locked(const std::vector<write_item*>& group) {
    if (auto b = step_done(c_.begin, c_.db, "BEGIN IMMEDIATE"); !b) {
      for (auto* item : group) item->outcome = b;
      return;
    }
    bool any = run_bare(group);
    if (!any && group.size() > 1) {
      (void)step_done(c_.rollback_tx, c_.db, "ROLLBACK");
      if (auto b = step_done(c_.begin, c_.db, "BEGIN IMMEDIATE"); !b) {
        for (auto* item : group) item->outcome = b;
        return;
      }
      any = run_in_savepoints(group);
    }
    const result<void> committed = any ? commit(group) : rollback();
    for (auto* item : group) {
      if (item->outcome) item->outcome = committed;
    }
  }

  /// Every member straight into the transaction; false at the first that fails.
  bool run_bare(const std::vector<write_item*>& group) {
    for (auto* item : group) {
      item->changes.deltas.clear();
      c_.tally_target = &item->changes;
      try {
        item->outcome = item->work();
      } catch (...) {
        item->outcome = error(errc::storage_failure, "exception inside a storage write");
      }
      c_.tally_target = nullptr;
      if (!item->outcome) return false;
    }
    return true;
  }

  /// Every member in its own savepoint; whether any succeeded.
  bool run_in_savepoints(const std::vector<write_item*>& group) {
    bool any = false;
    for (auto* item : group) {
      item->changes.deltas.clear();
      c_.tally_target = &item->changes;
      item->outcome = in_savepoint(item->work);
      c_.tally_target = nullptr;
      any = any || item->outcome.has_value();
    }
    return any;
  }

  /// Commits; once committed, the members that succeeded move the stats cache.
  result<void> commit(const std::vector<write_item*>& group) {
    result<void> committed = step_done(c_.commit_tx, c_.db, "COMMIT");
    if (!committed) {
      (void)step_done(c_.rollback_tx, c_.db, "ROLLBACK");
      return committed;
    }
    commits.fetch_add(1, std::memory_order_relaxed);
    try {
      if (c_.waiting.valid)
        for (auto* item : group)
          if (item->outcome) c_.waiting.apply(item->changes);
    } catch (...) {  // out of memory: the next stats() counts again
      c_.waiting.valid = false;
    }
    return committed;
  }

  /// Nothing of the group succeeded: nothing to commit.
  result<void> rollback() {
    (void)step_done(c_.rollback_tx, c_.db, "ROLLBACK");
    return {};
  }

  connection& c_;
  outbox::detail::member_queue<write_item> queue_{
      {std::chrono::microseconds(200), outbox::detail::group_commit::expectation::outstanding}};
  std::atomic<bool> group_open_{false};  // a leader's transaction is open on the connection
};

}  // namespace outbox::detail::sqlite
