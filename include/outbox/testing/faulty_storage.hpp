#pragma once
/// \file
/// `outbox::testing::faulty_storage<Storage>`: wraps any storage and makes chosen operations
/// fail, so tests can show that a failed write loses nothing stored before and that the
/// processor turns storage failures into reports instead of exceptions.
///
///     faulty_storage<memory_storage> s;
///     s.fail(storage_op::record, 2);   // the 2nd record() call fails, without touching storage
///     s.after(storage_op::claim, [&] { ... });  // runs after every successful claim()

#include <array>
#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <outbox/outbox.hpp>  // the single header provides it too

namespace outbox::testing {

enum class storage_op : std::size_t {
  append, claim, record, reset, reset_dead, purge_completed, clamp_schedule, commit, count_
};

template <class Storage>
class faulty_storage {
 public:
  explicit faulty_storage(Storage inner = Storage()) : inner_(std::move(inner)) {}

  /// The `nth` call (1-based, counted from now) of `op` fails with `code` and changes nothing.
  void fail(storage_op op, std::size_t nth = 1, errc code = errc::io_error) {
    auto& p = plan_[index(op)];
    p.fail_at = p.calls + nth;
    p.code = code;
  }
  /// Every call of `op` fails from now on, until `heal()`.
  void fail_always(storage_op op, errc code = errc::io_error) {
    auto& p = plan_[index(op)];
    p.always = true;
    p.code = code;
  }
  void heal() {
    for (auto& p : plan_) {
      p.always = false;
      p.fail_at = 0;
    }
  }
  /// Runs `hook` after every successful call of `op`.
  void after(storage_op op, std::function<void()> hook) { plan_[index(op)].after = std::move(hook); }

  [[nodiscard]] std::size_t calls(storage_op op) const { return plan_[index(op)].calls; }
  [[nodiscard]] Storage& inner() noexcept { return inner_; }

  result<void> append(std::span<event> events) { return call(storage_op::append, [&] { return inner_.append(events); }); }
  result<std::size_t> claim(const claim_request& r, std::vector<event>& out) {
    return call(storage_op::claim, [&] { return inner_.claim(r, out); });
  }
  result<std::size_t> record(std::span<outcome> outcomes) {
    return call(storage_op::record, [&] { return inner_.record(outcomes); });
  }
  result<std::size_t> reset(std::span<const event_id> ids, timestamp now) {
    return call(storage_op::reset, [&] { return inner_.reset(ids, now); });
  }
  result<std::size_t> reset_dead(std::optional<std::string_view> user, timestamp now) {
    return call(storage_op::reset_dead, [&] { return inner_.reset_dead(user, now); });
  }
  result<std::size_t> purge_completed(timestamp before) {
    return call(storage_op::purge_completed, [&] { return inner_.purge_completed(before); });
  }
  result<std::size_t> clamp_schedule(timestamp retry_limit, timestamp lease_limit) {
    return call(storage_op::clamp_schedule, [&] { return inner_.clamp_schedule(retry_limit, lease_limit); });
  }

  /// The entity half, when the wrapped storage has one.
  result<void> commit(const entity_change& change)
    requires entity_storage<Storage>
  {
    return call(storage_op::commit, [&] { return inner_.commit(change); });
  }
  result<std::optional<entity_record>> find_entity(std::string_view collection, std::string_view id)
    requires entity_storage<Storage>
  {
    return inner_.find_entity(collection, id);
  }
  result<std::optional<entity_record>> find_entity_by_key(std::string_view collection, std::string_view user,
                                                          std::string_view natural_key)
    requires entity_storage<Storage>
  {
    return inner_.find_entity_by_key(collection, user, natural_key);
  }
  result<std::vector<entity_record>> query_entities(const entity_query& q)
    requires entity_storage<Storage>
  {
    return inner_.query_entities(q);
  }

  // Reads never fail: the faults model failed writes.
  result<std::optional<event>> find(event_id id) { return inner_.find(id); }
  result<std::vector<event>> query(const event_query& q) { return inner_.query(q); }
  result<event_stats> stats(std::optional<std::string_view> user, timestamp now) { return inner_.stats(user, now); }
  result<std::optional<timestamp>> next_wake(std::string_view user, timestamp now) { return inner_.next_wake(user, now); }

 private:
  struct plan {
    std::size_t calls = 0;
    std::size_t fail_at = 0;
    bool always = false;
    errc code = errc::io_error;
    std::function<void()> after;
  };

  static constexpr std::size_t index(storage_op op) noexcept { return static_cast<std::size_t>(op); }

  template <class F>
  auto call(storage_op op, F&& f) -> decltype(f()) {
    auto& p = plan_[index(op)];
    ++p.calls;
    if (p.always || p.calls == p.fail_at) {
      return outbox::error(p.code, "injected failure of call " + std::to_string(p.calls));
    }
    auto done = f();
    if (done && p.after) p.after();
    return done;
  }

  Storage inner_;
  std::array<plan, static_cast<std::size_t>(storage_op::count_)> plan_{};
};

}  // namespace outbox::testing
