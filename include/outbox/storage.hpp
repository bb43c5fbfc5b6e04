#pragma once
/// \file
/// The vocabulary a storage speaks with the outbox: claim requests, outcomes to record,
/// queries and statistics. The requirements themselves are the concepts in concepts.hpp;
/// outbox/testing/storage_conformance.hpp states them as behaviour, and detail/lifecycle.hpp
/// holds the rules every storage applies (claim order, lease fencing, expiry, write-back).

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "outbox/clock.hpp"
#include "outbox/event.hpp"

namespace outbox {

/// Claim up to `limit` ready events of `user_id` under one lease ending at `lease_until`.
///
/// A storage claims, in this order: heads of ordering keys that are pending, or failed with
/// `retry_after <= now`; highest priority first, then lowest `seq`. At most one event per
/// ordering key is processing at a time. Claiming first expires leases that ended by `now`.
/// (The full statement of the order, which every storage implements, is in detail/lifecycle.hpp.)
struct claim_request {
  std::string_view user_id{};
  timestamp now{};
  timestamp lease_until{};
  std::size_t limit = 10;
};

/// The new state of one claimed event. A storage applies it only while the event is still
/// processing under the same `lease`; otherwise (the lease expired and the event moved on) it
/// sets `applied = false` and leaves the event untouched.
struct outcome {
  event_id id{};
  std::uint64_t lease = 0;
  status to = status::completed;  ///< completed, failed, dead, or pending (offline / released)
  int attempts = 0;               ///< the event's attempt count after this outcome
  timestamp at{};
  timestamp retry_after{};        ///< failed: when it becomes claimable again
  std::string error{};              ///< failed / dead / pending: the reason; empty keeps the last
  std::string remote_id{};          ///< completed: the backend's id
  bool applied = false;           ///< set by the storage
};

/// A page of events in append order: those matching every filter given, after `after_seq` (the
/// last seq of a previous page, to continue from it), at most `limit` of them.
///
/// Every storage serves a query that names an entity or a type from an index of that field: it
/// reads that entity's (or type's) events from `after_seq` on, not all events.
struct event_query {
  std::optional<status> status_is{};
  std::optional<std::string> user_id{};
  std::size_t limit = 100;
  std::uint64_t after_seq = 0;
  std::optional<std::string> entity_id{};  ///< events about this entity (`event::entity_id`)
  std::optional<std::string> type{};       ///< events of this type (`event::type`)

  /// Whether `e` passes every filter (not the page bounds `after_seq` and `limit`).
  [[nodiscard]] bool matches(const event& e) const noexcept {
    return (!status_is || e.status == *status_is) && (!user_id || e.user_id == *user_id) &&
           (!entity_id || e.entity_id == *entity_id) && (!type || e.type == *type);
  }
};

/// Counts and ages, for one user or for all.
struct event_stats {
  std::array<std::size_t, status_count> counts{};
  /// now - created_at of the pending event appended first (lowest seq).
  std::optional<duration> oldest_pending_age{};
  /// now - created_at of the claimable event appended first: a ready head, or a failed head
  /// whose retry time has come. How long the oldest deliverable change has been waiting.
  std::optional<duration> oldest_due_age{};
  /// now - created_at of the failed event appended first: how long a retry has been holding
  /// something back.
  std::optional<duration> oldest_failed_age{};
  /// now - created_at of the dead event appended first: a change that waits for a reset.
  std::optional<duration> oldest_dead_age{};

  [[nodiscard]] std::size_t count(status s) const noexcept {
    return counts[static_cast<std::size_t>(s)];
  }
  [[nodiscard]] std::size_t total() const noexcept {
    std::size_t sum = 0;
    for (auto c : counts) sum += c;
    return sum;
  }
};

}  // namespace outbox
