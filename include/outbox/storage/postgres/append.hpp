#pragma once
/// \file
/// Appending: a batch of new events in one round trip: its keys locked (schema.hpp, keys), then
/// the events inserted by one statement (one array per column, unnested by the server); the
/// seqs assigned are read back by id.

#include <cstddef>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "outbox/detail/lifecycle.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage/postgres/link.hpp"

namespace outbox::detail::postgres {

struct event_id_hash {
  std::size_t operator()(const event_id& id) const noexcept {
    return static_cast<std::size_t>(id.high * 0x9E3779B97F4A7C15ULL ^ id.low);
  }
};

/// What is wrong with a batch before it reaches the server: lifecycle::validate_new for each
/// event, an id twice in the batch included.
[[nodiscard]] inline result<void> validate_batch(std::span<const event> events) {
  std::unordered_set<event_id, event_id_hash> seen;
  seen.reserve(events.size());
  for (const event& e : events) {
    const bool repeated = !seen.insert(e.id).second;
    if (!lifecycle::acceptable_new(e) || repeated) return lifecycle::validate_new(e, repeated);
  }
  return {};
}

/// The error for a batch the server refused because an id was taken: the id its message names
/// ("Key (id)=(...) already exists").
[[nodiscard]] inline error duplicate_of(const error& refused, std::span<const event> events) {
  for (const event& e : events)
    if (refused.message.find("(" + e.id.to_string() + ")") != std::string::npos) return lifecycle::duplicate_id(e.id);
  return error(errc::invalid_argument, "an event id is taken: " + refused.message);
}

/// Inserts `events` (validated) in the running transaction and sets their seqs. An id the
/// storage already holds fails the whole batch (and the round trip's or the caller's transaction).
[[nodiscard]] inline result<void> insert_events(link& l, std::span<event> events) {
  if (events.empty()) return {};
  array_literal ids, types, entity_ids, entity_types, keys, users, payloads, priorities, max_attempts, created,
      updated, errors;
  for (const event& e : events) {
    ids.add(e.id);
    types.add(e.type);
    entity_ids.add(e.entity_id);
    entity_types.add(e.entity_type);
    keys.add(e.ordering_key);
    users.add(e.user_id);
    payloads.add_bytea(e.payload);
    priorities.add(std::int64_t{e.priority});
    max_attempts.add(std::int64_t{e.max_attempts});
    created.add(e.created_at);
    updated.add(e.updated_at);
    errors.add(e.last_error);
  }
  std::string users_text = std::move(users).str(), keys_text = std::move(keys).str();
  const query queries[] = {
      {l.sql.lock_keys, {users_text, keys_text}},
      {l.sql.append,
       {std::move(ids).str(), std::move(types).str(), std::move(entity_ids).str(), std::move(entity_types).str(),
        std::move(keys_text), std::move(users_text), std::move(payloads).str(), std::move(priorities).str(),
        std::move(max_attempts).str(), std::move(created).str(), std::move(updated).str(), std::move(errors).str()}}};
  auto all = l.run(queries, "appending events");
  if (!all) {
    if (has_sqlstate(all.error(), "23505")) return duplicate_of(all.error(), events);
    return all.error();
  }
  const result_handle* r = &(*all)[1];
  std::unordered_map<event_id, std::uint64_t, event_id_hash> seqs;
  seqs.reserve(static_cast<std::size_t>(r->rows()));
  for (int row = 0; row < r->rows(); ++row) seqs.emplace(r->id(row, 0), static_cast<std::uint64_t>(r->integer(row, 1)));
  for (const event& e : events)
    if (!seqs.count(e.id)) return lifecycle::duplicate_id(e.id);
  for (event& e : events) {
    e.seq = seqs[e.id];
    e.lease = 0;
  }
  return {};
}

}  // namespace outbox::detail::postgres
