#pragma once
/// \file
/// `outbox::mock_transport`: a scriptable, recording transport for tests and demos.
///
/// By default every event is delivered with remote id "remote-<n>". Rules change that per event
/// id, type, entity, user, attempt number or send call; `set_offline()` answers `unavailable`
/// for everything; `set_latency()` makes each send take real time. Every event handed to it is
/// recorded with its attempt number and the answer it got, so tests count duplicates and
/// check order. Copies share one state: keep a copy, give another to the outbox.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "outbox/event.hpp"

namespace outbox {

class mock_transport {
 public:
  /// Which events a rule applies to; unset fields match anything.
  struct match {
    std::optional<event_id> id{};
    std::optional<std::string> type{};
    std::optional<std::string> entity_id{};
    std::optional<std::string> user_id{};
    std::optional<int> attempt{};      ///< the event's attempt number (1 for the first try)
    std::optional<std::size_t> call{}; ///< the n-th send call (1-based)
  };

  /// One event as the backend saw it.
  struct delivery {
    event_id id{};
    std::string type{};
    std::string entity_id{};
    std::string ordering_key{};
    std::string user_id{};
    std::string payload{};
    int attempt = 0;
    std::size_t call = 0;
    delivery_result::kind outcome = delivery_result::kind::delivered;
  };

  mock_transport() : state_(std::make_shared<state>()) {}

  /// Answers `result` for events matching `m`, `times` times (negative: forever). Rules are
  /// tried in the order they were added; the first live match answers.
  mock_transport& add_rule(match m, delivery_result result, int times = -1) {
    std::lock_guard lock(state_->mutex);
    state_->rules.push_back({std::move(m), std::move(result), times});
    return *this;
  }

  /// A function consulted before the rules; returning nullopt falls through to them.
  using script_fn = std::function<std::optional<delivery_result>(const event&, std::size_t call)>;
  mock_transport& set_script(script_fn script) {
    std::lock_guard lock(state_->mutex);
    state_->script = std::move(script);
    return *this;
  }

  /// While offline every event is answered `unavailable`.
  void set_offline(bool offline) {
    std::lock_guard lock(state_->mutex);
    state_->offline = offline;
  }

  /// Each send call sleeps this long (real time) before answering.
  void set_latency(std::chrono::milliseconds latency) {
    std::lock_guard lock(state_->mutex);
    state_->latency = latency;
  }

  /// Called at the start of every send with the batch (outside the mock's lock): a test can
  /// block here to hold a batch in flight.
  void set_on_send(std::function<void(std::span<const event>)> hook) {
    std::lock_guard lock(state_->mutex);
    state_->on_send = std::move(hook);
  }

  void send(std::span<const event> batch, std::span<delivery_result> results) {
    std::function<void(std::span<const event>)> hook;
    std::chrono::milliseconds latency{};
    {
      std::lock_guard lock(state_->mutex);
      hook = state_->on_send;
      latency = state_->latency;
    }
    if (hook) hook(batch);
    if (latency.count() > 0) std::this_thread::sleep_for(latency);

    std::lock_guard lock(state_->mutex);
    const std::size_t call = ++state_->calls;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const event& e = batch[i];
      results[i] = answer(e, call);
      state_->deliveries.push_back({e.id, e.type, e.entity_id, e.ordering_key, e.user_id, e.payload,
                                    e.attempts, call, results[i].outcome});
    }
  }

  // ---- what the backend saw -------------------------------------------------------------------

  [[nodiscard]] std::vector<delivery> deliveries() const {
    std::lock_guard lock(state_->mutex);
    return state_->deliveries;
  }

  /// Events the backend accepted, in the order it accepted them.
  [[nodiscard]] std::vector<delivery> accepted() const {
    std::lock_guard lock(state_->mutex);
    std::vector<delivery> out;
    for (const auto& d : state_->deliveries)
      if (d.outcome == delivery_result::kind::delivered) out.push_back(d);
    return out;
  }

  [[nodiscard]] std::size_t accepted_count() const {
    std::lock_guard lock(state_->mutex);
    std::size_t n = 0;
    for (const auto& d : state_->deliveries) n += d.outcome == delivery_result::kind::delivered;
    return n;
  }

  /// How many times the backend accepted this event (more than once is a duplicate).
  [[nodiscard]] std::size_t accepted_count(event_id id) const {
    std::lock_guard lock(state_->mutex);
    std::size_t n = 0;
    for (const auto& d : state_->deliveries)
      n += d.id == id && d.outcome == delivery_result::kind::delivered;
    return n;
  }

  /// Accepted deliveries beyond the first of each event id.
  [[nodiscard]] std::size_t duplicates() const {
    std::lock_guard lock(state_->mutex);
    std::map<event_id, std::size_t> seen;
    std::size_t extra = 0;
    for (const auto& d : state_->deliveries)
      if (d.outcome == delivery_result::kind::delivered && seen[d.id]++ > 0) ++extra;
    return extra;
  }

  [[nodiscard]] std::size_t calls() const {
    std::lock_guard lock(state_->mutex);
    return state_->calls;
  }

 private:
  struct rule {
    match m;
    delivery_result result;
    int remaining;
  };

  struct state {
    mutable std::mutex mutex;
    std::vector<rule> rules;
    script_fn script;
    bool offline = false;
    std::chrono::milliseconds latency{0};
    std::function<void(std::span<const event>)> on_send;
    std::size_t calls = 0;
    std::uint64_t next_remote = 1;
    std::vector<delivery> deliveries;
  };

  static bool matches(const match& m, const event& e, std::size_t call) {
    return (!m.id || *m.id == e.id) && (!m.type || *m.type == e.type) &&
           (!m.entity_id || *m.entity_id == e.entity_id) && (!m.user_id || *m.user_id == e.user_id) &&
           (!m.attempt || *m.attempt == e.attempts) && (!m.call || *m.call == call);
  }

  delivery_result answer(const event& e, std::size_t call) {
    if (state_->offline) return delivery_result::unavailable("mock transport offline");
    if (state_->script) {
      if (auto scripted = state_->script(e, call)) return *scripted;
    }
    for (rule& r : state_->rules) {
      if (r.remaining == 0 || !matches(r.m, e, call)) continue;
      if (r.remaining > 0) --r.remaining;
      return r.result;
    }
    return delivery_result::delivered("remote-" + std::to_string(state_->next_remote++));
  }

  std::shared_ptr<state> state_;
};

}  // namespace outbox
