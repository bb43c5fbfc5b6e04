#pragma once
/// \file
/// Time as outbox sees it, and the two shipped clocks: `system_clock` (wall time) and
/// `manual_clock`, whose time moves only when a test calls `advance()`.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

namespace outbox {

/// Every stored time is wall time, so it means the same thing after a restart.
using timestamp = std::chrono::system_clock::time_point;
using duration = std::chrono::system_clock::duration;

/// Microseconds since the Unix epoch, the form storages persist.
[[nodiscard]] constexpr std::int64_t to_micros(timestamp t) noexcept {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}
[[nodiscard]] constexpr timestamp from_micros(std::int64_t us) noexcept {
  return timestamp(std::chrono::duration_cast<duration>(std::chrono::microseconds(us)));
}

/// The wall clock. Wall time can jump backwards (NTP, a user changing the date); the outbox
/// detects that and re-bounds waiting retries, see `Outbox::process_once`.
struct system_clock {
  [[nodiscard]] timestamp now() const noexcept { return std::chrono::system_clock::now(); }
};

/// A clock for tests: time starts at a fixed instant and moves only on `advance()` or `set()`.
/// Copies share one timeline, so a test keeps a copy and moves the time of the outbox that owns
/// another. Code that sleeps until a deadline (the outbox's runner) subscribes with
/// `on_change()` and is woken whenever the time moves.
class manual_clock {
 public:
  /// 2026-01-01T00:00:00Z unless told otherwise: a fixed start makes failures reproducible.
  explicit manual_clock(timestamp start = timestamp(std::chrono::seconds(1767225600)))
      : state_(std::make_shared<state>()) {
    state_->now = start;
  }

  [[nodiscard]] timestamp now() const {
    std::lock_guard lock(state_->mutex);
    return state_->now;
  }

  /// Moves time forward (or backward, with a negative step, to test wall-clock jumps).
  void advance(duration step) {
    std::lock_guard set_lock(state_->set_mutex);
    {
      std::lock_guard lock(state_->mutex);
      state_->now += step;
    }
    notify();
  }

  void set(timestamp t) {
    std::lock_guard set_lock(state_->set_mutex);
    {
      std::lock_guard lock(state_->mutex);
      state_->now = t;
    }
    notify();
  }

  /// Unsubscribes when destroyed.
  class subscription {
   public:
    subscription() = default;
    subscription(std::weak_ptr<void> state, std::function<void(std::uint64_t)> cancel, std::uint64_t id)
        : state_(std::move(state)), cancel_(std::move(cancel)), id_(id) {}
    subscription(subscription&& other) noexcept { swap(other); }
    subscription& operator=(subscription&& other) noexcept {
      subscription(std::move(other)).swap(*this);
      return *this;
    }
    subscription(const subscription&) = delete;
    subscription& operator=(const subscription&) = delete;
    ~subscription() {
      if (cancel_ && !state_.expired()) cancel_(id_);
    }

   private:
    void swap(subscription& other) noexcept {
      std::swap(state_, other.state_);
      std::swap(cancel_, other.cancel_);
      std::swap(id_, other.id_);
    }
    std::weak_ptr<void> state_;
    std::function<void(std::uint64_t)> cancel_;
    std::uint64_t id_ = 0;
  };

  /// Calls `listener` after every change of time, on the thread that changed it. A listener
  /// must not change the time itself nor destroy a subscription of this clock (deadlock).
  [[nodiscard]] subscription on_change(std::function<void()> listener) const {
    std::lock_guard lock(state_->mutex);
    const std::uint64_t id = ++state_->next_listener;
    state_->listeners.emplace(id, std::move(listener));
    std::weak_ptr<state> weak = state_;
    return subscription(state_, [weak](std::uint64_t listener_id) {
      if (auto s = weak.lock()) {
        std::lock_guard set_lock(s->set_mutex);  // waits out a notification in progress
        std::lock_guard inner(s->mutex);
        s->listeners.erase(listener_id);
      }
    }, id);
  }

 private:
  struct state {
    std::mutex set_mutex;  // serialises time changes with their notifications and unsubscribes
    mutable std::mutex mutex;
    timestamp now{};
    std::uint64_t next_listener = 0;
    std::map<std::uint64_t, std::function<void()>> listeners;
  };

  void notify() {
    std::map<std::uint64_t, std::function<void()>> listeners;
    {
      std::lock_guard lock(state_->mutex);
      listeners = state_->listeners;
    }
    for (auto& [id, listener] : listeners) listener();
  }

  std::shared_ptr<state> state_;
};

}  // namespace outbox
