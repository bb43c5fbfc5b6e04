#pragma once
/// \file
/// The entity half of a storage: entity rows as a storage keeps them, and the one atomic write
/// a `Repository` asks for. A storage that implements it (the `entity_storage` concept) stores an
/// entity change and its outbox event in one transaction, and writes the backend's answer back
/// onto the entity in the same transaction that completes the event.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "outbox/clock.hpp"
#include "outbox/event.hpp"
#include "outbox/event_id.hpp"

namespace outbox {

/// Whether the backend has the entity's latest state.
enum class sync_status : std::uint8_t {
  pending = 0,  ///< a change is waiting to be delivered (or was rejected: see sync_error)
  synced = 1,   ///< the latest change was delivered
};

[[nodiscard]] constexpr std::string_view to_string(sync_status s) noexcept {
  return s == sync_status::synced ? "synced" : "pending";
}

/// An entity as a storage keeps it: serialised, with its sync state.
struct entity_record {
  std::string collection{};    ///< the entity type's name ("steps")
  std::string id{};            ///< unique within the collection
  std::string user_id{};
  std::string natural_key{};   ///< unique per collection and user when not empty
  std::string payload{};       ///< the serialised entity
  timestamp occurred_at{};     ///< the entity's own time, for range queries
  sync_status sync = sync_status::pending;
  std::string remote_id{};     ///< the backend's id, once a delivery reported one
  std::string sync_error{};    ///< why the last change was not delivered (dead event)
  event_id last_event{};       ///< the newest event describing this entity
  std::uint64_t version = 0;   ///< bumped by every write, write-back included; 0 = absent
  timestamp created_at{};
  timestamp updated_at{};
};

/// One atomic write of an entity and its event, with the preconditions it was computed under.
/// A storage applies all of it or none; if a precondition no longer holds it changes nothing
/// and answers `errc::conflict`, and the repository reads again and recomputes.
struct entity_change {
  enum class event_op : std::uint8_t {
    append,   ///< append `event` as a new outbox event
    replace,  ///< give the unsent event `target` the type and payload of `event`
    drop,     ///< delete the unsent event `target` (nothing about it ever reached the backend)
  };

  entity_record entity{};          ///< the new row (its version is ignored; the storage bumps it)
  bool erase = false;              ///< delete the row instead of writing it
  std::uint64_t expected_version = 0;  ///< the row's version when read; 0: it must not exist
  event_op op = event_op::append;
  outbox::event event{};           ///< append: the new event; replace: its type and payload
  event_id target{};               ///< replace / drop: must still be pending with no attempt started
};

/// Entities of one collection, in `occurred_at` order.
struct entity_query {
  std::string collection{};
  std::optional<std::string> user_id{};
  std::optional<sync_status> sync{};
  std::optional<timestamp> from{};   ///< occurred_at >= from
  std::optional<timestamp> until{};  ///< occurred_at < until
  std::size_t limit = 100;
};

}  // namespace outbox
