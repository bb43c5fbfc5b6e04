#pragma once
/// \file
/// `outbox::Repository<Entity, Storage>`: entities whose every save, update and delete writes
/// the entity row and its outbox event in one storage transaction, so a crash can never keep
/// one without the other. Delivery writes the backend's answer back onto the entity.
///
///     struct weight {
///       static constexpr std::string_view collection = "weight";
///       std::string id, user_id;
///       double kg = 0;
///       std::string to_payload() const;                       // serialise
///       static weight from_payload(std::string_view json);    // parse
///     };
///     outbox::Repository<weight, outbox::memory_storage> weights(box);  // shares box's storage
///     weights.save({.id = "", .user_id = "alice", .kg = 71.4});  // empty id: one is assigned

#include <concepts>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "outbox/clock.hpp"
#include "outbox/concepts.hpp"
#include "outbox/entity.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/event_id.hpp"

namespace outbox {

// ---- entity traits ---------------------------------------------------------------------------

namespace detail {
template <class E>
concept has_string_id = requires(E& e, const E& c) {
  { c.id } -> std::convertible_to<std::string>;
  e.id = std::string();
};
template <class E>
concept has_string_user = requires(const E& c) {
  { c.user_id } -> std::convertible_to<std::string>;
};
template <class E>
concept has_collection = requires {
  { E::collection } -> std::convertible_to<std::string_view>;
};
template <class E>
concept has_member_serialiser = requires(const E& c) {
  { c.to_payload() } -> std::convertible_to<std::string>;
};
template <class E>
concept has_adl_serialiser = requires(const E& c) {
  { to_payload(c) } -> std::convertible_to<std::string>;
};
template <class E>
concept has_member_parser = requires(std::string_view text) {
  { E::from_payload(text) } -> std::convertible_to<E>;
};
template <class E>
concept has_adl_parser = requires(std::string_view text, E& out) { from_payload(text, out); };
template <class E>
concept has_natural_key = requires(const E& c) {
  { c.natural_key() } -> std::convertible_to<std::string>;
};
template <class E>
concept has_occurred_at = requires(const E& c) {
  { c.occurred_at } -> std::convertible_to<timestamp>;
};
template <class E>
concept has_priority = requires(const E& c) {
  { c.priority() } -> std::convertible_to<int>;
};
}  // namespace detail

/// How a Repository sees an entity type. The primary template reads members, so a plain
/// struct needs no boilerplate:
///
/// | required                    | default reads                                                    |
/// |-----------------------------|------------------------------------------------------------------|
/// | id (settable)               | `std::string id` (an empty id gets a UUID-v7 on first save)      |
/// | owner                       | `std::string user_id`                                            |
/// | collection name             | `static constexpr std::string_view collection`                   |
/// | serialise                   | `std::string to_payload() const`, or ADL `to_payload(const E&)`  |
/// | parse                       | `static E from_payload(std::string_view)`, or ADL `from_payload(std::string_view, E&)` |
///
/// | optional                    | default reads, else                                              |
/// |-----------------------------|------------------------------------------------------------------|
/// | natural key (dedup)         | `std::string natural_key() const`, else none                     |
/// | the entity's own time       | `outbox::timestamp occurred_at`, else the save time              |
/// | priority                    | `int priority() const`, else `outbox::priority::normal`          |
/// | ordering key                | `collection + "/" + id`                                          |
/// | event types                 | `collection + ".created" / ".updated" / ".deleted"`              |
///
/// Specialise `outbox::entity_traits<E>` to map a type you cannot change.
template <class Entity>
struct entity_traits {
  static std::string id(const Entity& e)
    requires detail::has_string_id<Entity>
  {
    return std::string(e.id);
  }
  static void set_id(Entity& e, std::string id)
    requires detail::has_string_id<Entity>
  {
    e.id = std::move(id);
  }
  static std::string user_id(const Entity& e)
    requires detail::has_string_user<Entity>
  {
    return std::string(e.user_id);
  }
  static constexpr std::string_view collection()
    requires detail::has_collection<Entity>
  {
    return Entity::collection;
  }
  static std::string serialize(const Entity& e)
    requires detail::has_member_serialiser<Entity> || detail::has_adl_serialiser<Entity>
  {
    if constexpr (detail::has_member_serialiser<Entity>) return e.to_payload();
    else return to_payload(e);
  }
  static Entity deserialize(std::string_view payload)
    requires detail::has_member_parser<Entity> || detail::has_adl_parser<Entity>
  {
    if constexpr (detail::has_member_parser<Entity>) {
      return Entity::from_payload(payload);
    } else {
      Entity e{};
      from_payload(payload, e);
      return e;
    }
  }
  static std::optional<std::string> natural_key(const Entity& e) {
    if constexpr (detail::has_natural_key<Entity>) return std::string(e.natural_key());
    else return std::nullopt;
  }
  static std::optional<timestamp> occurred_at(const Entity& e) {
    if constexpr (detail::has_occurred_at<Entity>) return timestamp(e.occurred_at);
    else return std::nullopt;
  }
  static int priority(const Entity& e) {
    if constexpr (detail::has_priority<Entity>) return e.priority();
    else return priority::normal;
  }
  static std::string ordering_key(const Entity& e) { return std::string(collection()) + "/" + id(e); }
  static std::string created_type() { return std::string(collection()) + ".created"; }
  static std::string updated_type() { return std::string(collection()) + ".updated"; }
  static std::string deleted_type() { return std::string(collection()) + ".deleted"; }
};

/// What a Repository needs from `entity_traits<E>`, one requirement at a time.
template <class E, class T = entity_traits<E>>
concept entity_with_id = requires(E& e, const E& c) {
  { T::id(c) } -> std::convertible_to<std::string>;
  T::set_id(e, std::string());
};
template <class E, class T = entity_traits<E>>
concept entity_with_owner = requires(const E& c) {
  { T::user_id(c) } -> std::convertible_to<std::string>;
};
template <class E, class T = entity_traits<E>>
concept entity_with_collection = requires {
  { T::collection() } -> std::convertible_to<std::string_view>;
};
template <class E, class T = entity_traits<E>>
concept serializable_entity = requires(const E& c, std::string_view text) {
  { T::serialize(c) } -> std::convertible_to<std::string>;
  { T::deserialize(text) } -> std::convertible_to<E>;
};

// ---- coalescing ------------------------------------------------------------------------------

enum class change_kind : std::uint8_t { created, updated, deleted };

/// The entity's newest event, when no transport has seen it yet (pending, no attempt started).
struct unsent_event {
  event_id id{};
  change_kind kind = change_kind::created;
};

/// What to do with a new change given the entity's unsent event, if any.
struct coalesce_decision {
  enum class action : std::uint8_t {
    append,   ///< queue a new event (behind any in flight: same ordering key)
    replace,  ///< rewrite the unsent event to carry the new state, as `kind`
    drop,     ///< delete the unsent event: the backend never needs to hear of it
  };
  action what = action::append;
  change_kind kind = change_kind::created;
};

/// A coalescing policy: `decide(incoming, unsent) -> coalesce_decision`.
template <class P>
concept coalescing_policy = requires(const P& p, change_kind incoming, const std::optional<unsent_event>& unsent) {
  { p.decide(incoming, unsent) } -> std::same_as<coalesce_decision>;
};

/// The default: a change to an entity whose previous change is still unsent rewrites that event
/// (a pending create stays a create, carrying the newest state); deleting an entity whose create
/// was never sent removes both; once an event is in flight, new changes queue behind it.
struct coalesce_unsent {
  [[nodiscard]] coalesce_decision decide(change_kind incoming, const std::optional<unsent_event>& unsent) const {
    using action = coalesce_decision::action;
    if (!unsent) return {action::append, incoming};
    if (incoming != change_kind::deleted) return {action::replace, unsent->kind};
    if (unsent->kind == change_kind::created) return {action::drop, change_kind::deleted};
    return {action::replace, change_kind::deleted};
  }
};

/// Every change is its own event, delivered in order.
struct never_coalesce {
  [[nodiscard]] coalesce_decision decide(change_kind incoming, const std::optional<unsent_event>&) const {
    return {coalesce_decision::action::append, incoming};
  }
};

// ---- the repository ----------------------------------------------------------------------------

/// An entity read back, with its sync state.
template <class Entity>
struct stored {
  Entity entity;
  sync_status sync = sync_status::pending;
  std::string remote_id;      ///< the backend's id, once known
  std::string sync_error;     ///< why the latest change was not delivered, if it died
  event_id last_event;        ///< the newest event describing it
  timestamp created_at{};
  timestamp updated_at{};
};

/// What a save or remove did.
struct save_result {
  std::string id{};           ///< the entity's id (assigned, or adopted from a natural-key match)
  change_kind kind = change_kind::created;
  coalesce_decision::action event_action = coalesce_decision::action::append;
  event_id event{};           ///< the event now carrying the change (none after a drop)
};

/// Which entities to list.
struct entity_filter {
  std::optional<std::string> user_id{};
  std::optional<sync_status> sync{};
  std::optional<timestamp> from{};
  std::optional<timestamp> until{};
  std::size_t limit = 100;
};

struct repository_options {
  int max_attempts = 5;                                    ///< for the events it writes
  std::size_t max_payload_bytes = std::size_t{1} << 20;    ///< larger serialised entities are refused
  int max_conflict_retries = 16;                           ///< re-reads when a claim races a save
};

template <class Entity, class Storage, class Coalescing = coalesce_unsent, class Clock = system_clock,
          class Traits = entity_traits<Entity>>
class Repository {
  static_assert(entity_storage<Storage>,
                "outbox::Repository: Storage must implement the entity half of the storage concept: commit(entity_change), "
                "find_entity, find_entity_by_key and query_entities (see outbox::entity_storage)");
  static_assert(entity_with_id<Entity, Traits>,
                "outbox::Repository: Entity needs a std::string member `id`, or specialise outbox::entity_traits "
                "with id(e) and set_id(e, id)");
  static_assert(entity_with_owner<Entity, Traits>,
                "outbox::Repository: Entity needs a std::string member `user_id`, or specialise "
                "outbox::entity_traits with user_id(e)");
  static_assert(entity_with_collection<Entity, Traits>,
                "outbox::Repository: Entity needs `static constexpr std::string_view collection = \"name\";`, or "
                "specialise outbox::entity_traits with collection()");
  static_assert(serializable_entity<Entity, Traits>,
                "outbox::Repository: Entity needs `std::string to_payload() const` and "
                "`static Entity from_payload(std::string_view)` (or ADL to_payload / from_payload), or specialise "
                "outbox::entity_traits with serialize and deserialize");
  static_assert(coalescing_policy<Coalescing>,
                "outbox::Repository: Coalescing must provide decide(change_kind, const std::optional<unsent_event>&) "
                "const -> coalesce_decision");
  static_assert(clock<Clock>, "outbox::Repository: Clock must provide now() const -> outbox::timestamp");

 public:
  /// The storage is shared (usually with an Outbox: `Repository repo(box.storage())`) and must
  /// outlive the repository. Throws `outbox::exception` for invalid options.
  explicit Repository(Storage& storage, Clock clock = Clock(), repository_options options = {},
                      Coalescing coalescing = Coalescing())
      : storage_(&storage), clock_(std::move(clock)), options_(options), coalescing_(std::move(coalescing)) {
    validate();
  }

  /// Shares an outbox's storage and clock, and wakes its runner after every save, so a change
  /// is delivered at once instead of at the next poll. The outbox must outlive the repository.
  template <class Box>
    requires requires(Box& box) {
      { box.storage() } -> std::same_as<Storage&>;
      { box.clock() } -> std::convertible_to<const Clock&>;
      box.notify();
    }
  explicit Repository(Box& box, repository_options options = {}, Coalescing coalescing = Coalescing())
      : storage_(&box.storage()),
        clock_(box.clock()),
        options_(options),
        coalescing_(std::move(coalescing)),
        notify_([&box] { box.notify(); }) {
    validate();
  }

 private:
  void validate() const {
    if (options_.max_attempts < 1) detail::throw_invalid_argument("outbox::Repository: max_attempts must be at least 1");
    if (options_.max_payload_bytes == 0)
      detail::throw_invalid_argument("outbox::Repository: max_payload_bytes must be positive");
    if (options_.max_conflict_retries < 1)
      detail::throw_invalid_argument("outbox::Repository: max_conflict_retries must be at least 1");
  }

 public:
  /// Saves the entity and its event in one transaction. An entity whose natural key already
  /// exists for its user updates that entity (and takes its id); an empty id gets a new one.
  result<save_result> save(Entity entity) {
    if (Traits::id(entity).empty()) Traits::set_id(entity, ids_.next(clock_.now()).to_string());
    const std::optional<std::string> natural_key = Traits::natural_key(entity);
    const std::string user = Traits::user_id(entity);
    if (user.empty()) return error(errc::invalid_argument, "entity " + Traits::id(entity) + " has no user_id");

    for (int attempt = 0; attempt < options_.max_conflict_retries; ++attempt) {
      std::optional<entity_record> existing;
      if (natural_key && !natural_key->empty()) {
        auto by_key = storage_->find_entity_by_key(collection(), user, *natural_key);
        if (!by_key) return by_key.error();
        existing = std::move(*by_key);
        if (existing) Traits::set_id(entity, existing->id);  // dedup: the stored entity is updated
      }
      const std::string id = Traits::id(entity);
      if (!existing) {
        auto by_id = storage_->find_entity(collection(), id);
        if (!by_id) return by_id.error();
        existing = std::move(*by_id);
      }
      const timestamp now = clock_.now();
      entity_change change;
      change.expected_version = existing ? existing->version : 0;
      change.entity = existing ? *existing : entity_record{};
      change.entity.collection = std::string(collection());
      change.entity.id = id;
      change.entity.user_id = user;
      change.entity.natural_key = natural_key.value_or(std::string());
      change.entity.payload = Traits::serialize(entity);
      change.entity.occurred_at = Traits::occurred_at(entity).value_or(now);
      change.entity.sync = sync_status::pending;
      change.entity.sync_error.clear();
      change.entity.updated_at = now;
      if (!existing) change.entity.created_at = now;
      if (change.entity.payload.size() > options_.max_payload_bytes)
        return error(errc::payload_too_large, "entity " + id + " serialises to " +
                                                  std::to_string(change.entity.payload.size()) +
                                                  " bytes, over max_payload_bytes = " +
                                                  std::to_string(options_.max_payload_bytes));

      auto outcome = write(change, existing, existing ? change_kind::updated : change_kind::created, entity, now);
      if (outcome || outcome.error().code != errc::conflict) return outcome;
    }
    return error(errc::conflict, "gave up saving after " + std::to_string(options_.max_conflict_retries) +
                                     " conflicting concurrent changes");
  }

  /// Deletes the entity and records the deletion for the backend (or, if the backend never
  /// heard of it, forgets both). Returns nullopt if there is no such entity.
  result<std::optional<save_result>> remove(std::string_view id) {
    for (int attempt = 0; attempt < options_.max_conflict_retries; ++attempt) {
      auto found = storage_->find_entity(collection(), id);
      if (!found) return found.error();
      if (!*found) return std::optional<save_result>();
      const entity_record& existing = **found;
      Entity entity = Traits::deserialize(existing.payload);
      Traits::set_id(entity, existing.id);  // the ordering key derives from it
      entity_change change;
      change.expected_version = existing.version;
      change.entity = existing;
      change.erase = true;
      auto outcome = write(change, *found, change_kind::deleted, entity, clock_.now());
      if (outcome) return std::optional<save_result>(*outcome);
      if (outcome.error().code != errc::conflict) return outcome.error();
    }
    return error(errc::conflict, "gave up removing after " + std::to_string(options_.max_conflict_retries) +
                                     " conflicting concurrent changes");
  }

  result<std::optional<stored<Entity>>> find(std::string_view id) {
    auto found = storage_->find_entity(collection(), id);
    if (!found) return found.error();
    if (!*found) return std::optional<stored<Entity>>();
    return std::optional<stored<Entity>>(to_stored(**found));
  }

  result<std::optional<stored<Entity>>> find_by_natural_key(std::string_view user, std::string_view natural_key) {
    auto found = storage_->find_entity_by_key(collection(), user, natural_key);
    if (!found) return found.error();
    if (!*found) return std::optional<stored<Entity>>();
    return std::optional<stored<Entity>>(to_stored(**found));
  }

  /// Entities in their own time order (`occurred_at`), filtered.
  result<std::vector<stored<Entity>>> query(const entity_filter& filter = {}) {
    entity_query q;
    q.collection = std::string(collection());
    q.user_id = filter.user_id;
    q.sync = filter.sync;
    q.from = filter.from;
    q.until = filter.until;
    q.limit = filter.limit;
    auto rows = storage_->query_entities(q);
    if (!rows) return rows.error();
    std::vector<stored<Entity>> out;
    out.reserve(rows->size());
    for (const auto& row : *rows) out.push_back(to_stored(row));
    return out;
  }

  [[nodiscard]] static constexpr std::string_view collection() { return Traits::collection(); }
  Clock& clock() noexcept { return clock_; }

 private:
  /// Builds the event side of a change from the coalescing decision and commits both.
  result<save_result> write(entity_change& change, const std::optional<entity_record>& existing, change_kind incoming,
                            const Entity& entity, timestamp now) {
    std::optional<unsent_event> unsent;
    if (existing && !existing->last_event.is_nil()) {
      auto last = storage_->find(existing->last_event);
      if (!last) return last.error();
      if (*last && (*last)->status == status::pending && (*last)->attempts == 0)
        unsent = unsent_event{(*last)->id, kind_of((*last)->type)};
    }
    const coalesce_decision decision = coalescing_.decide(incoming, unsent);
    if (decision.what != coalesce_decision::action::append && !unsent)
      return error(errc::invalid_argument, "the coalescing policy asked to rewrite an event that does not exist");

    event e;
    e.type = type_of(decision.kind);
    e.payload = change.entity.payload.empty() ? Traits::serialize(entity) : change.entity.payload;
    e.updated_at = now;
    save_result done;
    done.id = change.entity.id;
    done.kind = decision.kind;
    done.event_action = decision.what;
    switch (decision.what) {
      case coalesce_decision::action::append:
        e.id = ids_.next(now);
        e.entity_id = change.entity.id;
        e.entity_type = std::string(collection());
        e.ordering_key = Traits::ordering_key(entity);
        e.user_id = change.entity.user_id;
        e.priority = Traits::priority(entity);
        e.max_attempts = options_.max_attempts;
        e.created_at = now;
        change.op = entity_change::event_op::append;
        change.entity.last_event = e.id;
        done.event = e.id;
        break;
      case coalesce_decision::action::replace:
        change.op = entity_change::event_op::replace;
        change.target = unsent->id;
        change.entity.last_event = unsent->id;
        done.event = unsent->id;
        break;
      case coalesce_decision::action::drop:
        change.op = entity_change::event_op::drop;
        change.target = unsent->id;
        change.entity.last_event = {};
        break;
    }
    change.event = std::move(e);
    auto committed = storage_->commit(change);
    if (!committed) return committed.error();
    if (notify_ && change.op != entity_change::event_op::drop) notify_();
    return done;
  }

  [[nodiscard]] std::string type_of(change_kind kind) const {
    switch (kind) {
      case change_kind::created: return Traits::created_type();
      case change_kind::updated: return Traits::updated_type();
      case change_kind::deleted: return Traits::deleted_type();
    }
    return Traits::updated_type();
  }

  [[nodiscard]] change_kind kind_of(std::string_view type) const {
    if (type == Traits::created_type()) return change_kind::created;
    if (type == Traits::deleted_type()) return change_kind::deleted;
    return change_kind::updated;
  }

  stored<Entity> to_stored(const entity_record& row) const {
    Entity entity = Traits::deserialize(row.payload);
    Traits::set_id(entity, row.id);  // the row is the authority (an id may have been assigned or adopted)
    return {std::move(entity), row.sync, row.remote_id, row.sync_error, row.last_event, row.created_at,
            row.updated_at};
  }

  Storage* storage_;
  Clock clock_;
  repository_options options_;
  Coalescing coalescing_;
  std::function<void()> notify_;
  event_id_generator ids_;
};

}  // namespace outbox
