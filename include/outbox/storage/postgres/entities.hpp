#pragma once
/// \file
/// Entities: a change committed with the event it causes (appended, or an unsent one replaced or
/// dropped) in the running transaction, and the entity reads.

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "outbox/detail/lifecycle.hpp"
#include "outbox/entity.hpp"
#include "outbox/error.hpp"
#include "outbox/storage/postgres/append.hpp"
#include "outbox/storage/postgres/link.hpp"

namespace outbox::detail::postgres {

/// Commits `c` in the running transaction: its preconditions are read in one round trip (the
/// entity row and the target event locked), its writes made in another. Any failure leaves the
/// transaction to be rolled back by the caller.
[[nodiscard]] inline result<void> commit_change(link& l, const entity_change& c) {
  const std::string name = c.entity.collection + "/" + c.entity.id;
  const bool targets = c.op != entity_change::event_op::append;
  std::vector<query> reads{{l.sql.entity_version, {c.entity.collection, c.entity.id}},
                           {l.sql.natural_key_owner, {c.entity.collection, c.entity.user_id, c.entity.natural_key}}};
  if (targets) reads.push_back({l.sql.unsent_event, {text_of(c.target)}});
  auto r = l.run(reads, "reading an entity change's preconditions");
  if (!r) return r.error();
  const std::uint64_t current = (*r)[0].rows() ? static_cast<std::uint64_t>((*r)[0].integer(0, 0)) : 0;
  if (current != c.expected_version) return error(errc::conflict, "entity " + name + " changed since it was read");
  if (c.erase && current == 0) return error(errc::conflict, "entity " + name + " no longer exists");
  if (!c.erase && !c.entity.natural_key.empty() && (*r)[1].rows() && (*r)[1].str(0, 0) != c.entity.id)
    return error(errc::conflict, "natural key " + c.entity.natural_key + " belongs to " + (*r)[1].str(0, 0));
  if (targets) {
    const result_handle& t = (*r)[2];
    if (t.rows() == 0) return error(errc::conflict, "event " + c.target.to_string() + " no longer exists");
    if (t.integer(0, 0) != static_cast<int>(status::pending) || t.integer(0, 1) != 0)
      return error(errc::conflict, "event " + c.target.to_string() + " was claimed since it was read");
  }
  if (c.op == entity_change::event_op::append) {
    event e = c.event;
    if (!lifecycle::acceptable_new(e)) return lifecycle::validate_new(e, false);
  }

  std::vector<query> writes;
  const entity_record& x = c.entity;
  if (c.erase) {
    writes.push_back({l.sql.delete_entity, {x.collection, x.id}});
  } else {
    writes.push_back({l.sql.upsert_entity,
                      {x.collection, x.id, x.user_id, x.natural_key.empty() ? param() : param(x.natural_key),
                       bytea_of(x.payload), text_of(x.occurred_at), text_of(std::int64_t{static_cast<int>(x.sync)}),
                       x.remote_id, x.sync_error, x.last_event.is_nil() ? param() : param(text_of(x.last_event)),
                       text_of(static_cast<std::int64_t>(current + 1)), text_of(x.created_at), text_of(x.updated_at)}});
  }
  if (c.op == entity_change::event_op::replace)
    writes.push_back({l.sql.replace_event,
                      {text_of(c.target), c.event.type, bytea_of(c.event.payload), text_of(c.event.updated_at)}});
  if (c.op == entity_change::event_op::drop) writes.push_back({l.sql.drop_event, {text_of(c.target)}});
  if (auto w = l.run(writes, "writing an entity change"); !w) {
    // A row or natural key another writer inserted meanwhile (unique_violation, 23505).
    if (has_sqlstate(w.error(), "23505"))
      return error(errc::conflict, "entity " + name + ": " + w.error().message);
    return w.error();
  }
  if (c.op == entity_change::event_op::append) {
    event e = c.event;
    return insert_events(l, std::span<event>(&e, 1));
  }
  return {};
}

[[nodiscard]] inline result<std::optional<entity_record>> find_entity_row(link& l, const query& q, std::string_view what) {
  auto r = l.run_one(q, what);
  if (!r) return r.error();
  if (r->rows() == 0) return std::optional<entity_record>();
  return std::optional<entity_record>(read_entity(*r, 0));
}

[[nodiscard]] inline result<std::vector<entity_record>> query_entity_rows(link& l, const entity_query& q) {
  auto r = l.run_one({l.sql.query_entities,
                      {q.collection, q.user_id ? param(*q.user_id) : param(),
                       q.sync ? param(text_of(std::int64_t{static_cast<int>(*q.sync)})) : param(),
                       q.from ? param(text_of(*q.from)) : param(), q.until ? param(text_of(*q.until)) : param(),
                       text_of(static_cast<std::int64_t>(q.limit))}},
                     "querying entities");
  if (!r) return r.error();
  std::vector<entity_record> out;
  out.reserve(static_cast<std::size_t>(r->rows()));
  for (int row = 0; row < r->rows(); ++row) out.push_back(read_entity(*r, row));
  return out;
}

}  // namespace outbox::detail::postgres
