#pragma once
/// \file
/// The life-cycle rules of an event, written once: every storage and the outbox call these
/// instead of restating them. A storage whose engine states a rule in its own language (SQL)
/// points here from there.
///
/// The claim order. A claim for one user first expires the leases that ended by `now` (see
/// `lease_expiry`), then takes, up to its limit, the heads of ordering keys that are
/// claimable: pending, or failed with `retry_after <= now`. Of those it takes the highest
/// priority first, then the lowest `seq`. At most one event per ordering key is processing at a
/// time, so a key's next event becomes its head only once the one before it is completed or
/// dead. Each claimed event gets one more attempt, a fresh lease token, and the request's
/// `lease_until`. (`claim_rank` is this order as a sort key; memory_state keeps its ready set in
/// it, and the SQLite storage's ready_heads_sql sorts by the same columns.)

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <utility>

#include "outbox/clock.hpp"
#include "outbox/entity.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage.hpp"

namespace outbox::detail::lifecycle {

// ---- the claim order -----------------------------------------------------------------------

/// The claim order as a key: of two claimable heads, the one with the lower rank goes first.
/// `-priority` is 64-bit so that the lowest `int` priority negates without overflow.
[[nodiscard]] inline std::pair<std::int64_t, std::uint64_t> claim_rank(const event& head) noexcept {
  return {-static_cast<std::int64_t>(head.priority), head.seq};
}

/// The first lease token of a storage's run: random, so that a token from an earlier run (a
/// process that died holding a lease) can never match one handed out now. Tokens then count
/// up from it; the top bits stay clear so they never wrap.
[[nodiscard]] inline std::uint64_t random_lease_start() {
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32 | rd()) & 0x3FFF'FFFF'FFFF'FFFFULL;
}

// ---- new events ----------------------------------------------------------------------------

/// Whether `e` may be appended, apart from the uniqueness of its id (which only the storage
/// can check): a test cheap enough for every event of a batch.
[[nodiscard]] inline bool acceptable_new(const event& e) noexcept {
  return !e.id.is_nil() && e.status == status::pending;
}

/// The error for an id given twice, in a batch or against the storage.
[[nodiscard]] inline error duplicate_id(const event_id& id) {
  return error(errc::invalid_argument, "duplicate event id " + id.to_string());
}

/// What is wrong with a new event: the rules of `acceptable_new`, then the uniqueness of its
/// id (`duplicate`: the storage already holds it, or the batch has it twice).
[[nodiscard]] inline result<void> validate_new(const event& e, bool duplicate) {
  if (e.id.is_nil()) return error(errc::invalid_argument, "event id must not be nil");
  if (e.status != status::pending)
    return error(errc::invalid_argument, "a new event must be pending, got " + std::string(to_string(e.status)));
  if (duplicate) return duplicate_id(e.id);
  return {};
}

// ---- outcomes ------------------------------------------------------------------------------

/// An outcome of claimed event `e`: which event, under which lease, to what status, when, and
/// its attempt count so far.
[[nodiscard]] inline outcome outcome_of(const event& e, status to, timestamp at) {
  outcome o;
  o.id = e.id;
  o.lease = e.lease;
  o.to = to;
  o.attempts = e.attempts;
  o.at = at;
  return o;
}

/// A claimed event delivered: completed, with the backend's id.
[[nodiscard]] inline outcome delivered(const event& e, timestamp at, std::string remote_id) {
  outcome o = outcome_of(e, status::completed, at);
  o.remote_id = std::move(remote_id);
  return o;
}

/// A claimed event returned to pending unsent (the transport was offline, or the user changed):
/// the claim counted an attempt that never happened, so it is given back.
[[nodiscard]] inline outcome released(const event& e, timestamp at, std::string why) {
  outcome o = outcome_of(e, status::pending, at);
  o.attempts = e.attempts - 1;
  o.error = std::move(why);
  return o;
}

/// Whether a failure of an event's current attempt leaves it dead: it was the last one allowed.
[[nodiscard]] inline bool last_attempt(int attempts, int max_attempts) noexcept { return attempts >= max_attempts; }
[[nodiscard]] inline bool last_attempt(const event& e) noexcept { return last_attempt(e.attempts, e.max_attempts); }

/// A claimed event to be tried again at `retry_after`.
[[nodiscard]] inline outcome retry(const event& e, timestamp at, std::string why, timestamp retry_after) {
  outcome o = outcome_of(e, status::failed, at);
  o.retry_after = retry_after;
  o.error = std::move(why);
  return o;
}

/// A claimed event given up on.
[[nodiscard]] inline outcome dead(const event& e, timestamp at, std::string why) {
  outcome o = outcome_of(e, status::dead, at);
  o.error = std::move(why);
  return o;
}

/// A claimed event whose attempt failed: dead when `permanent` or on its last attempt, else
/// tried again at `retry_after`.
[[nodiscard]] inline outcome failed(const event& e, timestamp at, std::string why, bool permanent,
                                    timestamp retry_after) {
  if (permanent || last_attempt(e)) return dead(e, at, std::move(why));
  return retry(e, at, std::move(why), retry_after);
}

// ---- recording -----------------------------------------------------------------------------

/// Outcomes a storage refuses whole, before applying any: none may move an event to processing.
[[nodiscard]] inline result<void> check_outcomes(std::span<const outcome> outcomes) {
  for (const outcome& o : outcomes) {
    if (o.to == status::processing)
      return error(errc::invalid_argument, "an outcome cannot move an event to processing");
  }
  return {};
}

/// The record precondition (lease fencing): an outcome applies only while its event is still
/// processing under the lease it names. Otherwise the lease expired and the event moved on (to
/// another claim, maybe), and the outcome is stale.
[[nodiscard]] inline bool may_record(status current, std::uint64_t current_lease, const outcome& o) noexcept {
  return current == status::processing && current_lease == o.lease;
}

/// An outcome's changes to the stored event, once `may_record` allowed it (status excluded:
/// a storage moves that between its indexes).
inline void apply_outcome(event& e, const outcome& o) {
  e.lease = 0;
  e.lease_until = {};
  e.attempts = o.attempts;
  e.updated_at = o.at;
  if (!o.error.empty()) e.last_error = o.error;
  if (o.to == status::completed) {
    e.completed_at = o.at;
    e.remote_id = o.remote_id;
  } else if (o.to == status::failed) {
    e.retry_after = o.retry_after;
  }
}

// ---- lease expiry --------------------------------------------------------------------------

/// What an expired lease does to its event: the claimer died or hung, so the event goes back to
/// pending, or to dead if the lost attempt was its last.
struct expiry {
  status to;
  const char* message;
};
[[nodiscard]] inline expiry lease_expiry(int attempts, int max_attempts) noexcept {
  if (last_attempt(attempts, max_attempts)) return {status::dead, "lease expired during the last attempt"};
  return {status::pending, "lease expired"};
}
[[nodiscard]] inline expiry lease_expiry(const event& e) noexcept { return lease_expiry(e.attempts, e.max_attempts); }

// ---- write-back ----------------------------------------------------------------------------

/// Whether recording `e`'s new status writes back onto its entity: completed and dead do.
[[nodiscard]] inline bool writes_back(const event& e) noexcept {
  return !e.entity_type.empty() && (e.status == status::completed || e.status == status::dead);
}

/// A delivery outcome written onto the event's entity, in the transaction that records it: the
/// backend's id always; synced only if no newer change of the entity is waiting (the entity's
/// last event is this one); a dead event's error. The row's version moves on.
inline void write_back(const event& e, entity_record& row) {
  if (e.status == status::completed) {
    if (!e.remote_id.empty()) row.remote_id = e.remote_id;
    if (row.last_event == e.id) {
      row.sync = sync_status::synced;
      row.sync_error.clear();
    }
  } else {
    row.sync_error = e.last_error;
  }
  ++row.version;
}

}  // namespace outbox::detail::lifecycle
