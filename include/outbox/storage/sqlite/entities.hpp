#pragma once
/// \file
/// Entities: a change committed with the event it causes (appended, or an unsent one replaced or
/// dropped) in one transaction, and the entity reads.

#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "outbox/entity.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage/sqlite/maintenance.hpp"

namespace outbox::detail::sqlite {

struct entity_commits : event_maintenance {
  using event_maintenance::event_maintenance;

  /// Commits an entity change and its event in the running transaction (or savepoint): a
  /// failure of any step rolls all of it back.
  result<void> commit(const entity_change& c) {
    auto current = check_entity(c);
    if (!current) return current.error();
    unsent_event target;
    if (c.op != entity_change::event_op::append) {
      auto found = find_unsent(c.target);
      if (!found) return found.error();
      target = std::move(*found);
    }
    if (auto written = write_entity(c, *current); !written) return written;
    return apply_event_op(c, target);
  }

  /// The entity's stored version, once the change's preconditions hold: the version it was read
  /// at, an erased entity that exists, a natural key no other entity of the user holds.
  result<std::uint64_t> check_entity(const entity_change& c) {
    std::uint64_t current = 0;
    {
      auto& s = entity_version;
      reset_on_exit reset_guard{s};
      s.bind(1, c.entity.collection).bind(2, c.entity.id);
      const int rc = s.step();
      if (rc == SQLITE_ROW) current = static_cast<std::uint64_t>(s.int64(0));
      else if (rc != SQLITE_DONE) return failure(db, rc, "reading an entity version");
    }
    const std::string name = c.entity.collection + "/" + c.entity.id;
    if (current != c.expected_version) return error(errc::conflict, "entity " + name + " changed since it was read");
    if (c.erase && current == 0) return error(errc::conflict, "entity " + name + " no longer exists");
    if (!c.erase && !c.entity.natural_key.empty()) {
      auto& s = natural_key_owner;
      reset_on_exit reset_guard{s};
      s.bind(1, c.entity.collection).bind(2, c.entity.user_id).bind(3, c.entity.natural_key);
      const int rc = s.step();
      if (rc == SQLITE_ROW && s.text(0) != c.entity.id)
        return error(errc::conflict, "natural key " + c.entity.natural_key + " belongs to " + s.text(0));
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) return failure(db, rc, "checking a natural key");
    }
    return current;
  }

  /// The event a change replaces or drops, and its line.
  struct unsent_event {
    std::int64_t seq = 0;
    std::string user, key;
  };

  /// The event `id`, if it is still unsent (pending, never attempted); else a conflict.
  result<unsent_event> find_unsent(const event_id& id) {
    auto& s = find_seq;
    reset_on_exit reset_guard{s};
    s.bind(1, id);
    const int rc = s.step();
    if (rc == SQLITE_DONE) return error(errc::conflict, "event " + id.to_string() + " no longer exists");
    if (rc != SQLITE_ROW) return failure(db, rc, "reading an event");
    if (s.integer(1) != static_cast<int>(status::pending) || s.integer(2) != 0)
      return error(errc::conflict, "event " + id.to_string() + " was claimed since it was read");
    return unsent_event{s.int64(0), s.text(3), s.text(4)};
  }

  /// Writes (or erases) the entity row at the version after `current`.
  result<void> write_entity(const entity_change& c, std::uint64_t current) {
    if (c.erase) {
      delete_entity.bind(1, c.entity.collection).bind(2, c.entity.id);
      return step_done(delete_entity, db, "deleting an entity");
    }
    auto& s = upsert_entity;
    const entity_record& r = c.entity;
    s.bind(1, r.collection).bind(2, r.id).bind(3, r.user_id);
    if (r.natural_key.empty()) s.bind_null(4);
    else s.bind(4, r.natural_key);
    s.bind_blob(5, r.payload).bind(6, r.occurred_at).bind(7, static_cast<int>(r.sync)).bind(8, r.remote_id);
    s.bind(9, r.sync_error);
    if (r.last_event.is_nil()) s.bind_null(10);
    else s.bind(10, r.last_event);
    s.bind(11, current + 1).bind(12, r.created_at).bind(13, r.updated_at);
    return step_done(s, db, "writing an entity");
  }

  /// The change's event: appended, or the unsent `target` rewritten or dropped.
  result<void> apply_event_op(const entity_change& c, const unsent_event& target) {
    status_tally tally;
    switch (c.op) {
      case entity_change::event_op::append: {
        event e = c.event;
        if (auto inserted = insert_event(e, tally); !inserted) return inserted;
        break;
      }
      case entity_change::event_op::replace:
        replace_event.bind(1, target.seq).bind(2, c.event.type).bind_blob(3, c.event.payload).bind(4, c.event.updated_at);
        return step_done(replace_event, db, "rewriting an unsent event");
      case entity_change::event_op::drop:
        drop_event.bind(1, target.seq);
        if (auto d = step_done(drop_event, db, "dropping an unsent event"); !d) return d;
        if (auto r = refresh(target.user, target.key, target.seq); !r) return r;
        tally.add(target.user, status::pending, -1);  // only a pending event is dropped
        break;
    }
    return apply_counts(tally);
  }

  result<std::optional<entity_record>> find_entity(std::string_view collection, std::string_view id) {
    auto lock = lock_connection();
    find_entity_stmt.bind(1, collection).bind(2, id);
    return find_row(find_entity_stmt, db, "finding an entity", read_entity);
  }

  result<std::optional<entity_record>> find_entity_by_key(std::string_view collection, std::string_view user,
                                                          std::string_view natural_key) {
    auto lock = lock_connection();
    find_by_key_stmt.bind(1, collection).bind(2, user).bind(3, natural_key);
    return find_row(find_by_key_stmt, db, "finding an entity by natural key", read_entity);
  }

  result<std::vector<entity_record>> query_entities(const entity_query& q) {
    auto lock = lock_connection();
    std::string sql = "SELECT " + std::string(entity_columns) +
                      " FROM outbox_entities WHERE collection = ?1";
    if (q.user_id) sql += " AND user_id = ?2";
    if (q.sync) sql += " AND sync = ?3";
    if (q.from) sql += " AND occurred_at >= ?4";
    if (q.until) sql += " AND occurred_at < ?5";
    sql += " ORDER BY occurred_at, id LIMIT ?6";
    statement s(db, sql);
    if (s.prepare_error()) return *s.prepare_error();
    s.bind(1, q.collection);
    if (q.user_id) s.bind(2, *q.user_id);
    if (q.sync) s.bind(3, static_cast<int>(*q.sync));
    if (q.from) s.bind(4, *q.from);
    if (q.until) s.bind(5, *q.until);
    s.bind(6, static_cast<std::int64_t>(q.limit));
    return read_rows(s, db, "querying entities", read_entity);
  }
};

}  // namespace outbox::detail::sqlite
