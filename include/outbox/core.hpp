#pragma once
/// \file
/// `outbox::Outbox<Storage, Transport, Clock, Backoff>`: the event log and its delivery engine.
/// Most programs include <outbox/outbox.hpp>, which adds the shipped policies.
///
///     outbox::Outbox<outbox::memory_storage, outbox::mock_transport> box;
///     box.set_user("alice");
///     box.enqueue({.type = "steps.saved", .entity_id = "steps-2026-01-01T10", .payload = "{}"});
///     box.start();   // or call box.process_once() yourself
///
/// Producers call `enqueue` from any thread. One processor at a time (the background runner, or
/// whoever calls `process_once`) claims a batch of the active user's ready events, hands it to
/// the transport, and records each outcome. Nothing throws out of processing: transport and
/// callback exceptions become retry decisions and `on_error` reports.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "outbox/backoff.hpp"
#include "outbox/clock.hpp"
#include "outbox/concepts.hpp"
#include "outbox/detail/lifecycle.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/event_id.hpp"
#include "outbox/options.hpp"
#include "outbox/storage.hpp"

namespace outbox {

namespace detail {
template <class Backoff>
duration retry_bound(const Backoff& b, const options& o) {
  if constexpr (bounded_backoff<Backoff>) return std::chrono::duration_cast<duration>(b.max_delay());
  else return o.max_retry_delay;
}

/// What `on_change` returns for an observable clock; nothing for others.
template <class C>
struct clock_subscription {
  struct type {};
};
template <observable_clock C>
struct clock_subscription<C> {
  using type = decltype(std::declval<const C&>().on_change(std::function<void()>{}));
};

/// What `on_new_events` returns for an observable storage; nothing for others.
template <class S>
struct storage_subscription {
  struct type {};
};
template <observable_storage S>
struct storage_subscription<S> {
  using type = decltype(std::declval<const S&>().on_new_events(std::function<void()>{}));
};

[[gnu::cold]] inline std::string describe(std::exception_ptr exception) {
  try {
    std::rethrow_exception(std::move(exception));
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception";
  }
}

// The errors of the engine's rare paths, built out of line: every Outbox instantiation calls
// these instead of carrying its own copy of the string assembly.

/// What a producer's event breaks of the outbox's options.
[[gnu::cold, gnu::noinline]] inline error new_event_error(std::string_view type, std::size_t payload_size,
                                                          const options& o) {
  if (type.empty()) return error(errc::invalid_argument, "event type must not be empty");
  if (payload_size > o.max_payload_bytes)
    return error(errc::payload_too_large, "payload of " + std::to_string(payload_size) +
                                              " bytes exceeds max_payload_bytes = " + std::to_string(o.max_payload_bytes));
  return error(errc::invalid_argument, "max_attempts must not be negative");
}

/// Whether a producer's event keeps the outbox's options; `new_event_error` says how it does not.
[[nodiscard]] inline bool acceptable_new_event(std::string_view type, std::size_t payload_size, int max_attempts,
                                               const options& o) noexcept {
  return !type.empty() && payload_size <= o.max_payload_bytes && max_attempts >= 0;
}

/// The exception in flight, as an error with `code`, its message led by `context`.
[[gnu::cold, gnu::noinline]] inline error current_exception_error(errc code, std::string context) {
  return error(code, std::move(context) + describe(std::current_exception()));
}

/// Why a reset of `id` did nothing: it is gone, or not failed or dead.
[[gnu::cold, gnu::noinline]] inline error not_resettable(const event_id& id, const std::optional<event>& found) {
  if (!found) return error(errc::not_found, "no event " + id.to_string());
  return error(errc::invalid_state, "event " + id.to_string() + " is " + std::string(to_string(found->status)) +
                                        ", only failed or dead events can be reset");
}
}  // namespace detail

template <class Storage, class Transport, class Clock = system_clock, class Backoff = exponential_backoff>
class Outbox {
  static_assert(event_appender<Storage>,
                "outbox::Outbox: Storage must provide append(std::span<outbox::event>) -> outbox::result<void>");
  static_assert(event_claimer<Storage>,
                "outbox::Outbox: Storage must provide claim(const outbox::claim_request&, "
                "std::vector<outbox::event>&) -> outbox::result<std::size_t>");
  static_assert(outcome_recorder<Storage>,
                "outbox::Outbox: Storage must provide record(std::span<outbox::outcome>) -> "
                "outbox::result<std::size_t>");
  static_assert(event_inspector<Storage>,
                "outbox::Outbox: Storage must provide find(id), query(event_query), stats(user, now) and "
                "next_wake(user, now), each returning outbox::result<...> (see outbox::event_inspector)");
  static_assert(event_maintainer<Storage>,
                "outbox::Outbox: Storage must provide reset(ids, now), reset_dead(user, now), "
                "purge_completed(before) and clamp_schedule(retry_limit, lease_limit) -> "
                "outbox::result<std::size_t>");
  static_assert(transport<Transport>,
                "outbox::Outbox: Transport must provide send(std::span<const outbox::event>, "
                "std::span<outbox::delivery_result>)");
  static_assert(clock<Clock>, "outbox::Outbox: Clock must provide now() const -> outbox::timestamp");
  static_assert(backoff<Backoff>,
                "outbox::Outbox: Backoff must provide delay(int attempt) -> a std::chrono duration");

 public:
  using storage_type = Storage;
  using transport_type = Transport;
  using clock_type = Clock;
  using backoff_type = Backoff;

  using delivered_fn = std::function<void(const event&, const delivery_result&)>;
  using failed_fn = std::function<void(const event&, const delivery_result&)>;  ///< retry at event.retry_after
  using dead_fn = std::function<void(const event&, const delivery_result&)>;
  using error_fn = std::function<void(const outbox::error&)>;

  /// Throws `outbox::exception` (invalid_argument) for invalid options.
  explicit Outbox(Storage storage = Storage(), Transport transport = Transport(), Clock clock = Clock(),
                  Backoff backoff = Backoff(), options opts = {})
      : storage_(std::move(storage)),
        transport_(std::move(transport)),
        clock_(std::move(clock)),
        backoff_(std::move(backoff)),
        options_(validate(opts)) {
    if constexpr (observable_clock<Clock>) {
      clock_subscription_ = clock_.on_change([this] { wake_runner(false); });
    }
    if constexpr (error_reporting_transport<Transport>) {
      transport_.set_error_reporter([this](const outbox::error& e) { report_error(e); });
    }
    if constexpr (observable_storage<Storage>) {
      storage_subscription_ = std::as_const(storage_).on_new_events([this] { wake_runner(false); });
    }
  }

  /// Same, with options second: `Outbox box(storage, opts)` reads naturally.
  Outbox(Storage storage, options opts) : Outbox(std::move(storage), Transport(), Clock(), Backoff(), opts) {}

  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;

  /// Stops the runner (waiting for a batch in flight) before anything is destroyed.
  ~Outbox() { stop(); }

  // ---- producing -------------------------------------------------------------------------------

  /// Appends one event; returns its id once the storage holds it. Any thread.
  result<event_id> enqueue(new_event e) {
    event stored;
    if (auto made = make_event(std::move(e), clock_.now(), stored); !made) return made.error();
    if (auto appended = storage_.append(std::span<event>(&stored, 1)); !appended) return appended.error();
    wake_runner(false);
    return stored.id;
  }

  /// Appends several events in one storage transaction: all or none. Any thread. `events` is any
  /// contiguous range of `new_event` (a span, vector or array); a braced list such as
  /// `enqueue({})` is always one event, so it never needs a cast to pick an overload.
  template <std::ranges::contiguous_range Batch>
    requires std::same_as<std::ranges::range_value_t<Batch>, new_event>
  result<std::vector<event_id>> enqueue(const Batch& events) {
    const std::span<const new_event> batch(std::ranges::data(events), std::ranges::size(events));
    std::vector<event> stored(batch.size());
    const timestamp now = clock_.now();
    std::vector<event_id> ids(batch.size());
    ids_.next(now, ids);  // one lock for the batch; an id a refused batch does not use is skipped
    for (std::size_t i = 0; i < batch.size(); ++i) {
      stored[i].id = ids[i];
      if (auto made = make_event(batch[i], now, stored[i]); !made) return made.error();
    }
    if (auto appended = storage_.append(std::span<event>(stored)); !appended) return appended.error();
    wake_runner(false);
    return ids;
  }

  /// Wakes the runner to look for work now. Call it after writing events into the storage
  /// other than through `enqueue` (a Repository built from this outbox does it for you).
  void notify() { wake_runner(false); }

  // ---- the session -----------------------------------------------------------------------------

  /// Makes `user` the active user: only their events are delivered from now on. Returns after
  /// any batch claimed for the previous user has finished, so once it returns no event of
  /// another user is handed to the transport. (Called from a callback, it cannot wait for the
  /// batch it runs in; that batch was claimed and sent for the previous user.)
  void set_user(std::string user) { change_user(std::optional<std::string>(std::move(user))); }

  /// Logout: stops delivery; events stay stored for the next session of their user.
  void clear_user() { change_user(std::nullopt); }

  [[nodiscard]] std::optional<std::string> active_user() const {
    std::lock_guard lock(session_mutex_);
    return user_;
  }

  // ---- processing ------------------------------------------------------------------------------

  /// Claims one batch of the active user's ready events, sends it, records the outcomes, and
  /// runs the callbacks. Never throws. Serialised with the runner: one batch at a time.
  cycle_report process_once() noexcept {
    cycle_report report;
    try {
      std::unique_lock lock(process_mutex_);
      processing_thread_.store(std::this_thread::get_id());
      struct clear_thread {
        std::atomic<std::thread::id>& id;
        ~clear_thread() { id.store(std::thread::id()); }
      } clear{processing_thread_};
      run_cycle(report);
    } catch (...) {
      report_error(detail::current_exception_error(errc::storage_failure, "processing cycle failed: "));
      if (!report.error) report.error = detail::current_exception_error(errc::storage_failure, {});
    }
    return report;
  }

  /// Starts the background runner. It wakes on a new event (also one another process appended,
  /// when the storage tells: `observable_storage`), at the earliest retry or lease expiry, at
  /// least every `poll_interval`, and never busy-waits. Idempotent.
  void start() {
    std::lock_guard lock(runner_mutex_);
    if (runner_.joinable()) return;
    stop_requested_ = false;
    runner_ = std::thread([this] { run(); });
  }

  /// Stops the runner gracefully: a batch in flight finishes and its outcomes are recorded.
  void stop() {
    std::thread runner;
    {
      std::lock_guard lock(runner_mutex_);
      if (!runner_.joinable()) return;
      stop_requested_ = true;
      runner = std::move(runner_);
    }
    runner_cv_.notify_all();
    runner.join();
  }

  [[nodiscard]] bool running() const {
    std::lock_guard lock(runner_mutex_);
    return runner_.joinable();
  }

  /// Makes the runner run a full cycle now (even while it waits out an offline pause) and
  /// waits until it has. False if the runner is not running or the timeout passed first.
  bool run_cycle_and_wait(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(runner_mutex_);
    if (!runner_.joinable()) return false;
    // A cycle already under way may have claimed before our call: wait for one more.
    const std::uint64_t target = cycles_completed_ + (in_cycle_ ? 2 : 1);
    force_cycle_ = true;
    runner_cv_.notify_all();
    return idle_cv_.wait_for(lock, timeout, [&] { return cycles_completed_ >= target || !runner_.joinable(); }) &&
           cycles_completed_ >= target;
  }

  // ---- inspecting and repairing ----------------------------------------------------------------

  /// Returns a failed or dead event to pending with its attempt count cleared, so it gets the
  /// full `max_attempts` again. not_found / invalid_state (not failed or dead) otherwise.
  result<void> reset_for_retry(event_id id) {
    const event_id ids[] = {id};
    auto done = storage_.reset(ids, clock_.now());
    if (!done) return done.error();
    if (*done == 0) {
      auto found = storage_.find(id);
      if (!found) return found.error();
      return detail::not_resettable(id, *found);
    }
    wake_runner(false);
    return {};
  }

  /// Resets the given events that are failed or dead; returns how many were.
  result<std::size_t> reset_for_retry(std::span<const event_id> ids) {
    auto done = storage_.reset(ids, clock_.now());
    if (done && *done > 0) wake_runner(false);
    return done;
  }

  /// Resets every dead event (of one user, or of all); returns how many.
  result<std::size_t> reset_dead(std::optional<std::string_view> user = std::nullopt) {
    auto done = storage_.reset_dead(user, clock_.now());
    if (done && *done > 0) wake_runner(false);
    return done;
  }

  result<std::optional<event>> find(event_id id) { return storage_.find(id); }
  result<std::vector<event>> query(const event_query& q) { return storage_.query(q); }

  /// Counts per status and the ages of the oldest pending and oldest due events.
  result<event_stats> stats(std::optional<std::string_view> user = std::nullopt) {
    return storage_.stats(user, clock_.now());
  }

  /// Deletes completed events that completed more than `age` ago; returns how many.
  result<std::size_t> purge_completed(duration age) { return storage_.purge_completed(clock_.now() - age); }

  // ---- callbacks (set them before start(); they run on the processing thread) ------------------

  void on_delivered(delivered_fn fn) { set_callback(delivered_, std::move(fn)); }
  void on_failed(failed_fn fn) { set_callback(failed_, std::move(fn)); }
  void on_dead(dead_fn fn) { set_callback(dead_, std::move(fn)); }
  /// Storage failures of the processor, exceptions thrown by the transport or a callback, and
  /// what an `error_reporting_transport` reports (the HTTP transport: credentials refused).
  void on_error(error_fn fn) { set_callback(error_, std::move(fn)); }

  // ---- the policies --------------------------------------------------------------------------

  Storage& storage() noexcept { return storage_; }
  Transport& transport() noexcept { return transport_; }
  Clock& clock() noexcept { return clock_; }
  Backoff& backoff() noexcept { return backoff_; }
  [[nodiscard]] const options& settings() const noexcept { return options_; }

 private:
  /// Fills a stored event from a producer's description; the storage assigns `seq`. The strings
  /// of `e` are moved from an rvalue and copied once from an lvalue (a batch the caller keeps).
  template <class NewEvent>
  result<void> make_event(NewEvent&& e, timestamp now, event& out) {
    if (!detail::acceptable_new_event(e.type, e.payload.size(), e.max_attempts, options_))
      return detail::new_event_error(e.type, e.payload.size(), options_);
    if (e.user_id.empty()) {
      std::lock_guard lock(session_mutex_);
      if (!user_) return error(errc::no_active_user, "event names no user and no session is active");
      out.user_id = *user_;
    } else {
      out.user_id = std::forward<NewEvent>(e).user_id;
    }
    if (out.id.is_nil()) out.id = ids_.next(now);  // a batch's ids come made, under one lock
    out.type = std::forward<NewEvent>(e).type;
    out.entity_id = std::forward<NewEvent>(e).entity_id;
    // No key and no entity: the event is ordered against nothing, so it gets a line of its own.
    out.ordering_key = !e.ordering_key.empty() ? std::forward<NewEvent>(e).ordering_key
                       : !out.entity_id.empty() ? out.entity_id
                                                : out.id.to_string();
    out.payload = std::forward<NewEvent>(e).payload;
    out.priority = e.priority;
    out.status = status::pending;
    out.max_attempts = e.max_attempts > 0 ? e.max_attempts : options_.max_attempts;
    out.created_at = now;
    out.updated_at = now;
    return {};
  }

  static options validate(const options& o) {
    if (o.batch_size == 0) detail::throw_invalid_argument("outbox::Outbox: options.batch_size must be at least 1");
    if (o.poll_interval <= duration::zero())
      detail::throw_invalid_argument("outbox::Outbox: options.poll_interval must be positive");
    if (o.lease <= duration::zero()) detail::throw_invalid_argument("outbox::Outbox: options.lease must be positive");
    if (o.max_attempts < 1) detail::throw_invalid_argument("outbox::Outbox: options.max_attempts must be at least 1");
    if (o.max_payload_bytes == 0)
      detail::throw_invalid_argument("outbox::Outbox: options.max_payload_bytes must be positive");
    if (o.max_retry_delay < duration::zero())
      detail::throw_invalid_argument("outbox::Outbox: options.max_retry_delay must not be negative");
    return o;
  }

  template <class F>
  void set_callback(F& slot, F fn) {
    std::lock_guard lock(process_mutex_);
    slot = std::move(fn);
  }

  void change_user(std::optional<std::string> user) {
    {
      std::lock_guard lock(session_mutex_);
      user_ = std::move(user);
      ++session_;
    }
    // Wait out a batch of the previous session, unless we are that batch's own callback.
    if (processing_thread_.load() != std::this_thread::get_id()) {
      std::lock_guard wait(process_mutex_);
    }
    wake_runner(false);
  }

  void report_error(const outbox::error& e) noexcept {
    if (!error_) return;
    try {
      error_(e);
    } catch (...) {
      // The error handler itself failed: there is nobody left to tell.
    }
  }

  template <class F, class... Args>
  void invoke_callback(const F& fn, const char* name, Args&&... args) noexcept {
    if (!fn) return;
    try {
      fn(std::forward<Args>(args)...);
    } catch (...) {
      report_error(detail::current_exception_error(errc::invalid_state, std::string("outbox: ") + name + " callback threw: "));
    }
  }

  /// The wall clock may step back (NTP, a user changing the date). Retries and leases computed
  /// from the later time would then wait for the jump plus their delay; re-bound them so none
  /// waits longer than its own bound from now. Also done on the first cycle, for schedules
  /// written by an earlier run under another clock, and to release a dead run's claims.
  void rebound_schedules(timestamp now, cycle_report& report) {
    const bool first = !last_now_;
    const bool stepped_back = last_now_ && now < *last_now_;
    last_now_ = now;
    if (!first && !stepped_back) return;
    // At the first cycle of an exclusive outbox every lease in the storage is a dead process's.
    const timestamp lease_limit = first && options_.exclusive ? now : now + options_.lease;
    auto clamped = storage_.clamp_schedule(now + detail::retry_bound(backoff_, options_), lease_limit);
    if (!clamped) {
      report.error = clamped.error();
      report_error(clamped.error());
    }
  }

  void run_cycle(cycle_report& report) {
    std::string user;
    std::uint64_t session = 0;
    {
      std::lock_guard lock(session_mutex_);
      if (!user_) {
        report.no_user = true;
        return;
      }
      user = *user_;
      session = session_;
    }
    const timestamp now = clock_.now();
    rebound_schedules(now, report);

    batch_.clear();
    auto claimed = storage_.claim({user, now, now + options_.lease, options_.batch_size}, batch_);
    if (!claimed) {
      report.error = claimed.error();
      report_error(claimed.error());
      return;
    }
    report.claimed = batch_.size();
    if (batch_.empty()) return;

    // One outcome slot per event, assigned in place: the slots of the last cycle are reused.
    outcomes_.resize(batch_.size());
    if (session_changed(session)) {
      // The user logged out or switched between our claim and the send: hand nothing over.
      for (std::size_t i = 0; i < batch_.size(); ++i) outcomes_[i] = release(batch_[i], now, "released: the session changed");
      record(report);
      report.released = report.unavailable;
      report.unavailable = 0;
      return;
    }

    // An event the transport writes no result for fails without a reason (see decide). The
    // default result holds no string, so filling the batch allocates nothing per event.
    results_.assign(batch_.size(), delivery_result{});
    try {
      transport_.send(std::span<const event>(batch_), std::span<delivery_result>(results_));
    } catch (...) {
      const outbox::error thrown = detail::current_exception_error(errc::io_error, "transport threw: ");
      report_error(thrown);
      results_.assign(batch_.size(), delivery_result::retryable(thrown.message));
    }

    const timestamp done = clock_.now();
    for (std::size_t i = 0; i < batch_.size(); ++i) outcomes_[i] = decide(batch_[i], results_[i], done);
    record(report);
  }

  [[nodiscard]] bool session_changed(std::uint64_t session) const {
    std::lock_guard lock(session_mutex_);
    return session != session_;
  }

  static outcome release(const event& e, timestamp now, std::string why) {
    return detail::lifecycle::released(e, now, std::move(why));
  }

  /// What a transport answer does to a claimed event (the outcomes are lifecycle.hpp's; the
  /// retry delay is this outbox's backoff).
  outcome decide(const event& e, const delivery_result& r, timestamp now) {
    switch (r.outcome) {
      case delivery_result::kind::delivered: return detail::lifecycle::delivered(e, now, r.remote_id);
      case delivery_result::kind::unavailable: return release(e, now, r.error.empty() ? "transport unavailable" : r.error);
      case delivery_result::kind::permanent:
      case delivery_result::kind::retryable: break;
    }
    const bool permanent = r.outcome == delivery_result::kind::permanent;
    timestamp retry_after{};
    if (!permanent && !detail::lifecycle::last_attempt(e)) {
      const duration bound = detail::retry_bound(backoff_, options_);
      const duration delay = r.retry_after ? std::clamp(*r.retry_after, duration::zero(), bound)
                                           : std::chrono::duration_cast<duration>(backoff_.delay(e.attempts));
      retry_after = now + delay;
    }
    return detail::lifecycle::failed(e, now,
                                     r.error.empty() ? "delivery failed: the transport gave no reason (or no result)"
                                                     : r.error,
                                     permanent, retry_after);
  }

  void record(cycle_report& report) {
    auto recorded = storage_.record(std::span<outcome>(outcomes_));
    if (!recorded) {
      // Nothing was applied; the leases will expire and the events be delivered again.
      report.error = recorded.error();
      report_error(recorded.error());
      return;
    }
    for (std::size_t i = 0; i < outcomes_.size(); ++i) {
      const outcome& o = outcomes_[i];
      if (!o.applied) {
        ++report.stale;
        continue;
      }
      event& e = batch_[i];  // as the storage now holds it
      e.status = o.to;
      detail::lifecycle::apply_outcome(e, o);
      const delivery_result* r = i < results_.size() ? &results_[i] : nullptr;
      switch (o.to) {
        case status::completed:
          ++report.delivered;
          invoke_callback(delivered_, "on_delivered", std::as_const(e), *r);
          break;
        case status::failed:
          ++report.retried;
          invoke_callback(failed_, "on_failed", std::as_const(e), *r);
          break;
        case status::dead:
          ++report.dead;
          invoke_callback(dead_, "on_dead", std::as_const(e), *r);
          break;
        case status::pending: ++report.unavailable; break;
        case status::processing: break;
      }
    }
  }

  // ---- the runner ----------------------------------------------------------------------------

  void wake_runner(bool force) {
    {
      std::lock_guard lock(runner_mutex_);
      wake_requested_ = true;
      if (force) force_cycle_ = true;
    }
    runner_cv_.notify_all();
  }

  void run() noexcept {
    std::unique_lock lock(runner_mutex_);
    timestamp deadline = clock_.now();  // run a first cycle at once
    bool offline = false;
    int offline_streak = 0;
    while (!stop_requested_) {
      const timestamp now = clock_.now();
      const bool due = force_cycle_ || now >= deadline || (wake_requested_ && !offline);
      if (!due) {
        // Sleep in real time for the clock-time left (a manual clock wakes us on every change),
        // never longer than a poll interval: a wall clock that stepped back cannot freeze us.
        const auto left = std::min(deadline - now, options_.poll_interval);
        if (runner_cv_.wait_for(lock, left) == std::cv_status::timeout && !observable_clock<Clock>) {
          deadline = now;  // real time has passed even if the wall clock says otherwise
        }
        continue;
      }
      force_cycle_ = false;
      wake_requested_ = false;
      in_cycle_ = true;
      lock.unlock();

      const cycle_report report = process_once();
      offline = report.claimed > 0 && report.unavailable == report.claimed;
      offline_streak = offline ? offline_streak + 1 : 0;
      // Any claim can make more ready (the next event of each delivered key), so only an
      // empty claim means there is nothing to do until the next retry, lease expiry or poll.
      const bool more = report.claimed > 0 && !offline && !report.error;
      std::optional<timestamp> wake;
      if (!report.no_user && !more) {
        std::optional<std::string> user = active_user();
        if (user) {
          auto next = storage_.next_wake(*user, clock_.now());
          if (next) wake = *next;
        }
      }

      lock.lock();
      in_cycle_ = false;
      ++cycles_completed_;
      idle_cv_.notify_all();
      const timestamp after = clock_.now();
      if (more) {
        deadline = after;  // go again without sleeping
      } else if (offline) {
        // Offline: back off (bounded by the poll interval) instead of re-sending at once.
        const auto pause = std::min(std::chrono::duration_cast<duration>(backoff_delay(offline_streak)),
                                    options_.poll_interval);
        deadline = after + std::max(pause, duration(std::chrono::milliseconds(100)));
      } else {
        deadline = after + options_.poll_interval;
        if (wake && *wake < deadline) deadline = *wake;
      }
    }
    idle_cv_.notify_all();
  }

  duration backoff_delay(int streak) {
    std::lock_guard lock(process_mutex_);  // the backoff is also used by process_once
    return std::chrono::duration_cast<duration>(backoff_.delay(streak));
  }

  Storage storage_;
  Transport transport_;
  Clock clock_;
  Backoff backoff_;
  const options options_;
  event_id_generator ids_;

  // Processing: one cycle at a time; its buffers are reused across cycles.
  std::mutex process_mutex_;
  std::atomic<std::thread::id> processing_thread_{};
  std::vector<event> batch_;
  std::vector<delivery_result> results_;
  std::vector<outcome> outcomes_;
  std::optional<timestamp> last_now_;
  delivered_fn delivered_;
  failed_fn failed_;
  dead_fn dead_;
  error_fn error_;

  // The session.
  mutable std::mutex session_mutex_;
  std::optional<std::string> user_;
  std::uint64_t session_ = 0;

  // The runner.
  mutable std::mutex runner_mutex_;
  std::condition_variable runner_cv_;
  std::condition_variable idle_cv_;
  std::thread runner_;
  bool stop_requested_ = false;
  bool wake_requested_ = false;
  bool force_cycle_ = false;
  bool in_cycle_ = false;
  std::uint64_t cycles_completed_ = 0;

  // Last: unsubscribes before the runner's state above is destroyed.
  typename detail::clock_subscription<Clock>::type clock_subscription_{};
  typename detail::storage_subscription<Storage>::type storage_subscription_{};
};

}  // namespace outbox
