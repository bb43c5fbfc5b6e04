#pragma once
/// \file
/// Group commit, written once for every durable storage: callers queue their work, one of them
/// (the leader) makes the work of all queued callers durable at once (one write and sync, one
/// COMMIT), and each caller returns once its own work is settled: durable, or failed with the
/// error its storage gives it.
///
/// The storage owns the mutex that guards its queue, and supplies only its engine's steps, as a
/// `Steps` object passed to `await`:
///
///     Batch take(std::size_t queued);   // locked: take the oldest queued members (their
///                                       //   number is `Batch::members`)
///     bool write(Batch&);               // unlocked: make them durable; false if the group
///                                       //   failed as a whole (the storage now refuses work)
///     void finish(Batch&, bool written);// locked, still leading: account for the write
///     bool stopped();                   // locked: the storage refuses work (waiters return)
///
/// Per-member failure isolation is the storage's: a `write` that settles every member with its
/// own outcome (SQLite re-runs a failed group with a savepoint per member) returns true.
///
/// The gathering rule. A new leader first waits, briefly, for the callers the last group
/// released: they come back with their next call while the leader would otherwise already be
/// writing without them, and would then wait for the group after it; groups would settle into
/// alternating halves, each caller paying two syncs per call. So before taking the queue a
/// leader waits until as many members are queued as it expects (see `expectation`), for at most
/// half the last group's write and never longer than the storage's `max_gather`: at most half a
/// sync. A lone caller (an expectation of one) never waits.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace outbox::detail {

class group_commit {
 public:
  /// How many members the next leader waits for.
  enum class expectation : std::uint8_t {
    last_group,   ///< as many as the last group carried
    outstanding,  ///< those, and the members queued while it was written
  };
  struct tuning {
    std::chrono::nanoseconds max_gather{};  ///< the longest a leader waits; zero: never
    expectation expect = expectation::last_group;
  };

  explicit group_commit(tuning t) noexcept : tuning_(t) {}

  /// Under the storage's mutex: one more member is queued. Returns its ticket, for `await`.
  std::uint64_t join() {
    ++queued_;
    if (gathering_ && queued_ >= expected_) gather_cv_.notify_one();
    return ++joined_;
  }

  /// Under the storage's mutex (held in `lock`): returns once member `ticket` is settled (true)
  /// or the storage stopped (false). Leads groups while no one else does.
  template <class Steps>
  bool await(std::unique_lock<std::mutex>& lock, std::uint64_t ticket, Steps& steps) {
    while (settled_ < ticket) {
      if (steps.stopped()) return false;
      if (leading_) {
        settled_cv_.wait(lock);
        continue;
      }
      lead(lock, steps);
    }
    return true;
  }

  /// Nobody leads and every member joined is settled.
  [[nodiscard]] bool idle() const noexcept { return !leading_ && settled_ == joined_; }
  /// Every member joined is settled (the group being finished included).
  [[nodiscard]] bool all_settled() const noexcept { return settled_ == joined_; }
  /// Waits, under the storage's mutex, until a group finishes.
  void wait_for_group(std::unique_lock<std::mutex>& lock) { settled_cv_.wait(lock); }

 private:
  template <class Steps>
  void lead(std::unique_lock<std::mutex>& lock, Steps& steps) {
    leading_ = true;
    gather(lock);
    auto batch = steps.take(queued_);
    const std::size_t taken = batch.members;
    queued_ -= taken;
    lock.unlock();
    const auto started = std::chrono::steady_clock::now();
    bool written = false;
    try {
      written = steps.write(batch);
    } catch (...) {
      lock.lock();
      release(steps, batch, false, taken, {});
      throw;
    }
    const auto took = std::chrono::steady_clock::now() - started;
    lock.lock();
    release(steps, batch, written, taken, took);
  }

  template <class Steps, class Batch>
  void release(Steps& steps, Batch& batch, bool written, std::size_t taken, std::chrono::nanoseconds took) {
    if (written) settled_ += taken;
    steps.finish(batch, written);
    if (written) {
      expected_ = tuning_.expect == expectation::outstanding ? taken + queued_ : taken;
      last_took_ = took;
    }
    leading_ = false;
    settled_cv_.notify_all();
  }

  void gather(std::unique_lock<std::mutex>& lock) {
    if (expected_ <= 1 || queued_ >= expected_) return;
    const auto budget = std::min<std::chrono::nanoseconds>(last_took_ / 2, tuning_.max_gather);
    if (budget <= std::chrono::nanoseconds::zero()) return;
    gathering_ = true;
    gather_cv_.wait_for(lock, budget, [&] { return queued_ >= expected_; });
    gathering_ = false;
  }

  tuning tuning_;
  std::condition_variable settled_cv_;  // a group finished
  std::condition_variable gather_cv_;   // a gathering leader waits here for members
  std::uint64_t joined_ = 0;
  std::uint64_t settled_ = 0;
  std::size_t queued_ = 0;
  bool leading_ = false;
  bool gathering_ = false;
  std::size_t expected_ = 0;
  std::chrono::nanoseconds last_took_{0};
};

/// The queue of a storage whose group is one transaction on one connection (SQLite,
/// PostgreSQL): callers submit a member, and the leader hands every queued member to the
/// storage's `run(std::vector<Member*>&)`, which runs them in one transaction and settles each
/// with its own outcome (so a group never fails whole).
template <class Member>
class member_queue {
 public:
  explicit member_queue(group_commit::tuning t) noexcept : commit_(t) {}
  member_queue(const member_queue&) = delete;
  member_queue& operator=(const member_queue&) = delete;

  /// Queues `member`; returns once a group ran it (this caller leading it or not).
  template <class Run>
  void submit(Member& member, Run&& run) {
    std::unique_lock lock(mutex_);
    queue_.push_back(&member);
    const std::uint64_t ticket = commit_.join();
    steps<Run> s{*this, run};
    commit_.await(lock, ticket, s);
  }

 private:
  template <class Run>
  struct steps {
    member_queue& q;
    Run& run;
    struct batch {
      std::vector<Member*> items;
      std::size_t members = 0;
    };
    batch take(std::size_t /*queued*/) {
      batch b;
      b.items.swap(q.queue_);
      b.members = b.items.size();
      return b;
    }
    bool write(batch& b) {
      run(b.items);
      return true;
    }
    void finish(batch& /*b*/, bool /*written*/) {}
    [[nodiscard]] bool stopped() const noexcept { return false; }
  };

  std::mutex mutex_;  // guards queue_ and commit_
  std::vector<Member*> queue_;
  group_commit commit_;
};

}  // namespace outbox::detail
