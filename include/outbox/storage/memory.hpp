#pragma once
/// \file
/// `outbox::memory_storage`: a thread-safe storage that keeps everything in memory. Fast and
/// exact, but gone with the process: for tests, caches of data that can be rebuilt, and as the
/// reference the durable storages are checked against. Its index is detail/memory_state.hpp.

#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "outbox/detail/memory_state.hpp"
#include "outbox/clock.hpp"
#include "outbox/entity.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage.hpp"

namespace outbox {

/// A thread-safe, in-memory `outbox::storage` and `outbox::entity_storage`. Movable; every
/// operation takes one mutex, so each is atomic.
class memory_storage {
  struct shared {
    std::mutex mutex;
    detail::memory_state state;
  };
  std::unique_ptr<shared> shared_;

  template <class F>
  auto locked(F&& f) {
    std::lock_guard lock(shared_->mutex);
    return f(shared_->state);
  }

 public:
  memory_storage() : shared_(std::make_unique<shared>()) {}

  result<void> append(std::span<event> events) { return locked([&](auto& s) { return s.append(events); }); }
  result<std::size_t> claim(const claim_request& request, std::vector<event>& out) {
    return locked([&](auto& s) { return s.claim(request, out); });
  }
  result<std::size_t> record(std::span<outcome> outcomes) {
    return locked([&](auto& s) { return s.record(outcomes); });
  }
  result<std::optional<event>> find(event_id id) {
    return locked([&](auto& s) { return result<std::optional<event>>(s.find(id)); });
  }
  result<std::vector<event>> query(const event_query& q) {
    return locked([&](auto& s) { return result<std::vector<event>>(s.query(q)); });
  }
  /// Counts and ages for `user` (all users if none), aged at `now`: the shape every storage and
  /// the outbox share. `now` is the outbox's clock; without it, the wall clock.
  result<event_stats> stats(std::optional<std::string_view> user, timestamp now) {
    return locked([&](auto& s) { return result<event_stats>(s.stats(user, now)); });
  }
  result<event_stats> stats(std::optional<std::string_view> user = std::nullopt) {
    return stats(user, system_clock{}.now());
  }
  result<std::optional<timestamp>> next_wake(std::string_view user, timestamp /*now*/) {
    return locked([&](auto& s) { return result<std::optional<timestamp>>(s.next_wake(user)); });
  }
  result<std::size_t> reset(std::span<const event_id> ids, timestamp now) {
    return locked([&](auto& s) { return s.reset(ids, now); });
  }
  result<std::size_t> reset_dead(std::optional<std::string_view> user, timestamp now) {
    return locked([&](auto& s) { return s.reset_dead(user, now); });
  }
  result<std::size_t> purge_completed(timestamp before) {
    return locked([&](auto& s) { return s.purge_completed(before); });
  }
  result<std::size_t> clamp_schedule(timestamp retry_limit, timestamp lease_limit) {
    return locked([&](auto& s) { return s.clamp_schedule(retry_limit, lease_limit); });
  }

  result<void> commit(const entity_change& change) { return locked([&](auto& s) { return s.commit(change); }); }
  result<std::optional<entity_record>> find_entity(std::string_view collection, std::string_view id) {
    return locked([&](auto& s) { return result<std::optional<entity_record>>(s.find_entity(collection, id)); });
  }
  result<std::optional<entity_record>> find_entity_by_key(std::string_view collection, std::string_view user,
                                                          std::string_view natural_key) {
    return locked([&](auto& s) {
      return result<std::optional<entity_record>>(s.find_entity_by_key(collection, user, natural_key));
    });
  }
  result<std::vector<entity_record>> query_entities(const entity_query& q) {
    return locked([&](auto& s) { return result<std::vector<entity_record>>(s.query_entities(q)); });
  }

};

}  // namespace outbox
