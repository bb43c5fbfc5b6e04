#pragma once
/// \file
/// The outbox event, its status, and what a transport answers for it.
///
/// Life cycle (the storage enforces it):
///
///     pending --claim--> processing --delivered--> completed
///        ^                  |-- retryable error, attempts left --> failed (until retry_after)
///        |                  |-- retryable error on the last attempt, or permanent --> dead
///        |                  |-- transport unavailable (offline) --> pending, attempt not counted
///        |                  '-- lease expired (the process died) --> pending (dead if it was
///        |                                                            the last attempt)
///        '------------ reset_for_retry(id) <-- failed | dead

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "outbox/clock.hpp"
#include "outbox/event_id.hpp"

namespace outbox {

enum class status : std::uint8_t {
  pending = 0,     ///< waiting to be claimed
  processing = 1,  ///< claimed under a lease, handed to the transport
  completed = 2,   ///< delivered; kept for the audit trail until purged
  failed = 3,      ///< a retryable error; claimable again at retry_after
  dead = 4,        ///< out of attempts or rejected for good; waits for reset_for_retry
};
inline constexpr std::size_t status_count = 5;

[[nodiscard]] constexpr std::string_view to_string(status s) noexcept {
  switch (s) {
    case status::pending: return "pending";
    case status::processing: return "processing";
    case status::completed: return "completed";
    case status::failed: return "failed";
    case status::dead: return "dead";
  }
  return "unknown";
}

/// Completed and dead events leave the delivery line of their ordering key.
[[nodiscard]] constexpr bool is_terminal(status s) noexcept {
  return s == status::completed || s == status::dead;
}

/// Priorities: higher is claimed first. Any int works; these name the usual three.
namespace priority {
inline constexpr int low = -10;
inline constexpr int normal = 0;
inline constexpr int high = 10;
}  // namespace priority

/// A stored outbox event: what to deliver and its whole delivery history (the audit trail).
struct event {
  event_id id{};                ///< idempotency key for the backend; UUID-v7, time ordered
  std::uint64_t seq = 0;      ///< append order, assigned by the storage (1, 2, ...)
  std::string type{};           ///< "steps.hourly.created", by convention entity.verb
  std::string entity_id{};      ///< the entity this event describes
  std::string entity_type{};    ///< its collection when a Repository wrote it ("steps"); else empty
  std::string ordering_key{};   ///< events sharing it are delivered in append order
  std::string user_id{};        ///< the owner; only the active user's events are delivered
  std::string payload{};        ///< opaque bytes (JSON by convention)
  int priority = priority::normal;
  outbox::status status = status::pending;
  int attempts = 0;           ///< delivery attempts started (the one in flight included)
  int max_attempts = 5;       ///< dead after this many failed attempts
  timestamp created_at{};
  timestamp updated_at{};     ///< time of the last transition
  timestamp retry_after{};    ///< failed: claimable from then on
  timestamp completed_at{};   ///< completed: when; zero otherwise
  std::string last_error{};     ///< why the last attempt failed; kept after success for the audit
  std::string remote_id{};      ///< the backend's id for what was delivered, when it gave one
  std::uint64_t lease = 0;    ///< processing: the claim token a result must present
  timestamp lease_until{};    ///< processing: when the claim expires back to pending
};

/// What a producer supplies; the outbox fills in id, times and status.
struct new_event {
  std::string type{};
  std::string entity_id{};
  std::string payload{};
  std::string user_id{};        ///< empty: the active session's user
  std::string ordering_key{};   ///< empty: the entity id
  int priority = priority::normal;
  int max_attempts = 0;       ///< 0: the outbox's default (5)
};

/// A transport's answer for one event of a batch.
struct delivery_result {
  enum class kind : std::uint8_t {
    delivered,    ///< the backend accepted it
    retryable,    ///< failed this time; retry after backoff (or the server's hint)
    permanent,    ///< rejected for good (validation, 4xx); goes straight to dead
    unavailable,  ///< the backend could not be reached at all (offline); no attempt is used
  };

  kind outcome = kind::retryable;
  std::string remote_id{};                 ///< delivered: the backend's id, if any
  std::string error{};                     ///< failures: why, for the audit trail
  std::optional<duration> retry_after{};   ///< retryable: the server's hint; wins over backoff

  [[nodiscard]] static delivery_result delivered(std::string remote_id = {}) {
    return {kind::delivered, std::move(remote_id), {}, std::nullopt};
  }
  [[nodiscard]] static delivery_result retryable(std::string error,
                                                 std::optional<duration> retry_after = std::nullopt) {
    return {kind::retryable, {}, std::move(error), retry_after};
  }
  [[nodiscard]] static delivery_result permanent(std::string error) {
    return {kind::permanent, {}, std::move(error), std::nullopt};
  }
  [[nodiscard]] static delivery_result unavailable(std::string error = "transport unavailable") {
    return {kind::unavailable, {}, std::move(error), std::nullopt};
  }
};

}  // namespace outbox
