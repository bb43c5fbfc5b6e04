#pragma once
/// \file
/// The policy concepts, narrow to broad, so a failed check names the smallest requirement a
/// policy misses. `Outbox` checks each one with a static_assert whose message says what to add.

#include <concepts>
#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "outbox/clock.hpp"
#include "outbox/entity.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage.hpp"

namespace outbox {

// ---- clock -------------------------------------------------------------------------------

/// `c.now()` gives the current `outbox::timestamp`.
template <class C>
concept clock = requires(const C& c) {
  { c.now() } -> std::same_as<timestamp>;
};

/// Optional: a clock that can tell when its time moves (the manual clock). The runner then
/// sleeps until told instead of for a real-time interval.
template <class C>
concept observable_clock = clock<C> && requires(const C& c) {
  c.on_change([] {});
};

// ---- backoff -----------------------------------------------------------------------------

/// `b.delay(n)`: how long to wait after the n-th failed attempt (n starts at 1).
template <class B>
concept backoff = requires(B& b, int attempt) {
  { b.delay(attempt) } -> std::convertible_to<duration>;
};

/// Optional: the longest delay the backoff ever returns; it also bounds a server's
/// retry-after hint and how far ahead any retry may be scheduled.
template <class B>
concept bounded_backoff = backoff<B> && requires(const B& b) {
  { b.max_delay() } -> std::convertible_to<duration>;
};

// ---- transport ---------------------------------------------------------------------------

/// `t.send(batch, results)` delivers a batch and writes one result per event, in order.
/// `results` arrives pre-filled with "retryable: no result", so an event the transport skips
/// is retried, never silently taken as delivered.
template <class T>
concept transport = requires(T& t, std::span<const event> batch, std::span<delivery_result> results) {
  t.send(batch, results);
};

/// Optional: a transport with failures to report beyond one event's result (a login that
/// expired). The outbox hands it a reporter bound to its `on_error` callback at construction;
/// the transport calls it on the processing thread, from within `send`.
template <class T>
concept error_reporting_transport = transport<T> && requires(T& t, std::function<void(const error&)> reporter) {
  t.set_error_reporter(std::move(reporter));
};

// ---- storage, narrow to broad --------------------------------------------------------------

/// Appends new events atomically: all of them or none. Assigns `seq` in place. The events are
/// the storage's to consume: an append refused for its input (`errc::invalid_argument`) leaves
/// them as they were; after any other outcome their string members may have been moved from,
/// while ids, seqs and the scalar members keep their values.
template <class S>
concept event_appender = requires(S& s, std::span<event> events) {
  { s.append(events) } -> std::same_as<result<void>>;
};

/// Claims ready events as leases (see `claim_request` for the order), appending them to `out`.
template <class S>
concept event_claimer = requires(S& s, const claim_request& request, std::vector<event>& out) {
  { s.claim(request, out) } -> std::same_as<result<std::size_t>>;
};

/// Records outcomes of claimed events, atomically; stale leases are not applied.
template <class S>
concept outcome_recorder = requires(S& s, std::span<outcome> outcomes) {
  { s.record(outcomes) } -> std::same_as<result<std::size_t>>;
};

/// Reads events and statistics; tells when the next retry or lease expiry falls due.
template <class S>
concept event_inspector = requires(S& s, event_id id, const event_query& query,
                                   std::optional<std::string_view> user, std::string_view active,
                                   timestamp now) {
  { s.find(id) } -> std::same_as<result<std::optional<event>>>;
  { s.query(query) } -> std::same_as<result<std::vector<event>>>;
  { s.stats(user, now) } -> std::same_as<result<event_stats>>;
  { s.next_wake(active, now) } -> std::same_as<result<std::optional<timestamp>>>;
};

/// Resets failed and dead events, purges old completed ones, re-bounds schedules after the
/// wall clock stepped back.
template <class S>
concept event_maintainer = requires(S& s, std::span<const event_id> ids,
                                    std::optional<std::string_view> user, timestamp t) {
  { s.reset(ids, t) } -> std::same_as<result<std::size_t>>;
  { s.reset_dead(user, t) } -> std::same_as<result<std::size_t>>;
  { s.purge_completed(t) } -> std::same_as<result<std::size_t>>;
  { s.clamp_schedule(t, t) } -> std::same_as<result<std::size_t>>;
};

/// Everything the outbox needs from a storage.
template <class S>
concept storage = event_appender<S> && event_claimer<S> && outcome_recorder<S> &&
                  event_inspector<S> && event_maintainer<S>;

/// Optional: a storage that can tell when events are appended by others (another process or
/// relay on a shared database). `on_new_events(fn)` calls `fn` (from any thread) on each
/// append until the subscription it returns is destroyed; the runner then wakes at once
/// instead of at its next poll.
template <class S>
concept observable_storage = storage<S> && requires(const S& s) {
  s.on_new_events(std::function<void()>{});
};

// ---- the entity half, for Repository ------------------------------------------------------

/// A storage that also keeps entities: commits an entity change and its event atomically, and
/// writes delivery outcomes back onto the entity when it records them.
template <class S>
concept entity_storage = storage<S> && requires(S& s, const entity_change& change, std::string_view text,
                                                const entity_query& query) {
  { s.commit(change) } -> std::same_as<result<void>>;
  { s.find_entity(text, text) } -> std::same_as<result<std::optional<entity_record>>>;
  { s.find_entity_by_key(text, text, text) } -> std::same_as<result<std::optional<entity_record>>>;
  { s.query_entities(query) } -> std::same_as<result<std::vector<entity_record>>>;
};

}  // namespace outbox
