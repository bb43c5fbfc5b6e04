#pragma once
/// \file
/// Conformance chapters for the rows of `outbox::entity_storage`: commit, its refusals, natural
/// keys and query_entities. Run by `run_entity_storage_conformance`.

#include <catch2/catch.hpp>

#include <chrono>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <outbox/testing/conformance/fixture.hpp>

namespace outbox::testing::conformance {

/// `commit` with an appended event: the row as given, its event, the version the storage owns.
template <class Storage>
void commit_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;

  SECTION("commit with an append stores the row as given and its event, in one write") {
    entity_change c = f.make_entity_change("steps", "a", "alice", "2026-11-21T09");
    c.entity.payload = bytes("{\"count\":412}\0\xff tail");
    c.entity.occurred_at = t0 + 9h + 123456us;  // times round-trip at microsecond precision
    c.entity.created_at = t0 + 1s;
    c.entity.updated_at = t0 + 2s;
    c.entity.sync = sync_status::synced;        // stored as given: the row is the caller's
    c.entity.remote_id = "srv-0";
    c.entity.sync_error = "an earlier reason";
    c.entity.version = 77;                      // ignored: the storage owns the version
    c.event.payload = bytes("{\"n\":1}\0\x01");
    c.event.priority = priority::high;
    commit_ok(s, c);

    const entity_record row = row_of(s, "steps", "a");
    CHECK(row.collection == "steps");
    CHECK(row.id == "a");
    CHECK(row.user_id == "alice");
    CHECK(row.natural_key == "2026-11-21T09");
    CHECK(row.payload == c.entity.payload);
    CHECK(row.occurred_at == t0 + 9h + 123456us);
    CHECK(row.created_at == t0 + 1s);
    CHECK(row.updated_at == t0 + 2s);
    CHECK(row.sync == sync_status::synced);
    CHECK(row.remote_id == "srv-0");
    CHECK(row.sync_error == "an earlier reason");
    CHECK(row.last_event == c.event.id);
    CHECK(row.version == 1);
    auto by_key = s.find_entity_by_key("steps", "alice", "2026-11-21T09");
    REQUIRE(by_key.has_value());
    REQUIRE(by_key->has_value());
    CHECK(text_of(**by_key) == text_of(row));

    const event e = fetch(s, c.event.id);
    CHECK(e.seq > 0);
    CHECK(e.type == "steps.created");
    CHECK(e.entity_type == "steps");
    CHECK(e.entity_id == "a");
    CHECK(e.ordering_key == "steps/a");
    CHECK(e.user_id == "alice");
    CHECK(e.payload == c.event.payload);
    CHECK(e.priority == priority::high);
    CHECK(e.status == status::pending);
    CHECK(e.attempts == 0);
    CHECK(e.created_at == t0);
    auto claimed = claim(s, f.claim_at("alice", t0));
    REQUIRE(claimed.size() == 1);
    CHECK(claimed[0].id == c.event.id);

    CHECK_FALSE(has_row(s, "steps", "b"));
    CHECK_FALSE(has_row(s, "weight", "a"));  // an id is unique within its collection only
    CHECK(key_owner(s, "steps", "bob", "2026-11-21T09").empty());
  }

  SECTION("every commit bumps the version by one and replaces the row, keeping created_at") {
    const entity_change first = f.make_entity_change("steps", "a", "alice", "k");
    commit_ok(s, first);
    entity_change second = f.make_update(row_of(s, "steps", "a"));
    second.entity.payload = "second";
    second.entity.occurred_at = t0 + 1h;
    second.entity.created_at = t0 + 5h;  // a caller cannot move the creation time
    second.entity.updated_at = t0 + 5h;
    second.entity.remote_id = "srv-1";
    commit_ok(s, second);

    const entity_record row = row_of(s, "steps", "a");
    CHECK(row.version == 2);
    CHECK(row.payload == "second");
    CHECK(row.occurred_at == t0 + 1h);
    CHECK(row.created_at == t0);
    CHECK(row.updated_at == t0 + 5h);
    CHECK(row.remote_id == "srv-1");
    CHECK(row.last_event == second.event.id);
    CHECK(fetch(s, first.event.id).seq < fetch(s, second.event.id).seq);  // both kept, in append order
    commit_ok(s, f.make_update(row));
    CHECK(row_of(s, "steps", "a").version == 3);
    CHECK(event_count(s, t0) == 3);
  }
}

/// A stale version is a conflict, an invalid event is invalid_argument; neither changes anything.
template <class Storage>
void commit_refusal_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;

  SECTION("a commit computed from a stale version is a conflict and changes nothing") {
    commit_ok(s, f.make_entity_change("steps", "a", "alice", "k"));
    commit_ok(s, f.make_update(row_of(s, "steps", "a")));
    const entity_record current = row_of(s, "steps", "a");
    REQUIRE(current.version == 2);
    const std::string before = snapshot(s, {{"steps", "a"}});

    entity_change stale = f.make_update(current);
    stale.expected_version = 1;
    CHECK(commit_answer(s, stale) == "conflict");
    CHECK_FALSE(has_event(s, stale.event.id));
    entity_change ahead = f.make_update(current);
    ahead.expected_version = 3;
    CHECK(commit_answer(s, ahead) == "conflict");
    // Expecting no row (0) while there is one: a concurrent create of the same id.
    CHECK(commit_answer(s, f.make_entity_change("steps", "a", "alice", "k")) == "conflict");
    entity_change stale_erase = f.make_update(current);
    stale_erase.erase = true;
    stale_erase.expected_version = 1;
    CHECK(commit_answer(s, stale_erase) == "conflict");
    entity_change stale_replace = f.make_replace(current, current.last_event);
    stale_replace.expected_version = 1;
    CHECK(commit_answer(s, stale_replace) == "conflict");
    entity_change stale_drop = f.make_drop(current, current.last_event);
    stale_drop.expected_version = 1;
    CHECK(commit_answer(s, stale_drop) == "conflict");
    CHECK(snapshot(s, {{"steps", "a"}}) == before);

    // Expecting a row that does not exist.
    entity_change phantom = f.make_entity_change("steps", "b", "alice");
    phantom.expected_version = 1;
    CHECK(commit_answer(s, phantom) == "conflict");
    CHECK_FALSE(has_row(s, "steps", "b"));
    CHECK_FALSE(has_event(s, phantom.event.id));
  }

  SECTION("an invalid appended event (nil or duplicate id, not pending) is invalid_argument and changes nothing") {
    entity_change nil = f.make_entity_change("steps", "a", "alice", "k");
    nil.event.id = {};
    CHECK(commit_answer(s, nil) == "invalid_argument");
    CHECK_FALSE(has_row(s, "steps", "a"));
    CHECK(key_owner(s, "steps", "alice", "k").empty());
    CHECK(event_count(s, t0) == 0);

    const entity_change stored = f.make_entity_change("steps", "a", "alice", "k");
    commit_ok(s, stored);
    const std::string before = snapshot(s, {{"steps", "a"}, {"steps", "b"}});
    entity_change duplicate_new = f.make_entity_change("steps", "b", "alice", "k-b");
    duplicate_new.event.id = stored.event.id;
    CHECK(commit_answer(s, duplicate_new) == "invalid_argument");
    entity_change duplicate_update = f.make_update(row_of(s, "steps", "a"));
    duplicate_update.event.id = stored.event.id;
    CHECK(commit_answer(s, duplicate_update) == "invalid_argument");
    entity_change not_pending = f.make_update(row_of(s, "steps", "a"));
    not_pending.event.status = status::completed;
    CHECK(commit_answer(s, not_pending) == "invalid_argument");
    CHECK(snapshot(s, {{"steps", "a"}, {"steps", "b"}}) == before);
    CHECK(key_owner(s, "steps", "alice", "k-b").empty());
  }
}

/// Erasing rows and natural keys: unique per (collection, user), freed by erase or change.
template <class Storage>
void natural_key_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;

  SECTION("erase deletes the row and frees its natural key; erasing a missing row is a conflict") {
    const entity_change created = f.make_entity_change("steps", "a", "alice", "k");
    commit_ok(s, created);
    entity_change erase = f.make_update(row_of(s, "steps", "a"));
    erase.erase = true;
    erase.event.type = "steps.deleted";
    commit_ok(s, erase);
    CHECK_FALSE(has_row(s, "steps", "a"));
    CHECK(key_owner(s, "steps", "alice", "k").empty());
    CHECK(fetch(s, erase.event.id).type == "steps.deleted");  // the deletion still goes out, after the create
    auto first = claim(s, f.claim_at("alice", t0));
    REQUIRE(first.size() == 1);
    CHECK(first[0].id == created.event.id);

    const std::string before = snapshot(s, {{"steps", "a"}});
    entity_change again = f.make_update(erase.entity);  // as read before the erase: version 1
    again.erase = true;
    CHECK(commit_answer(s, again) == "conflict");
    entity_change never = f.make_entity_change("steps", "a", "alice", "k");
    never.erase = true;  // expects no row and deletes it: there is nothing to delete
    CHECK(commit_answer(s, never) == "conflict");
    CHECK(snapshot(s, {{"steps", "a"}}) == before);

    commit_ok(s, f.make_entity_change("steps", "b", "alice", "k"));  // the freed key
    CHECK(key_owner(s, "steps", "alice", "k") == "b");
    commit_ok(s, f.make_entity_change("steps", "a", "alice", "k2"));  // the id, anew
    CHECK(row_of(s, "steps", "a").version == 1);
  }

  SECTION("a natural key is unique per collection and user") {
    const std::string key = "2026-11-21T09";
    commit_ok(s, f.make_entity_change("steps", "a", "alice", key));
    const std::string before = snapshot(s, {{"steps", "a"}, {"steps", "b"}});
    const entity_change taken = f.make_entity_change("steps", "b", "alice", key);
    CHECK(commit_answer(s, taken) == "conflict");
    CHECK(snapshot(s, {{"steps", "a"}, {"steps", "b"}}) == before);
    CHECK(key_owner(s, "steps", "alice", key) == "a");

    commit_ok(s, f.make_entity_change("steps", "c", "bob", key));      // another user
    commit_ok(s, f.make_entity_change("heart", "d", "alice", key));    // another collection
    CHECK(key_owner(s, "steps", "alice", key) == "a");
    CHECK(key_owner(s, "steps", "bob", key) == "c");
    CHECK(key_owner(s, "heart", "alice", key) == "d");
    CHECK(key_owner(s, "heart", "bob", key).empty());
    CHECK(key_owner(s, "steps", "alice", "2026-11-21T10").empty());

    commit_ok(s, f.make_update(row_of(s, "steps", "a")));  // a row's own key is no conflict
    CHECK(key_owner(s, "steps", "alice", key) == "a");

    // An empty natural key means none: any number of rows may have it, and it finds nothing.
    commit_ok(s, f.make_entity_change("steps", "e", "alice"));
    commit_ok(s, f.make_entity_change("steps", "f", "alice"));
    CHECK(key_owner(s, "steps", "alice", "").empty());
  }

  SECTION("changing a row's natural key frees the old one") {
    commit_ok(s, f.make_entity_change("steps", "a", "alice", "k1"));
    entity_change moved = f.make_update(row_of(s, "steps", "a"));
    moved.entity.natural_key = "k2";
    commit_ok(s, moved);
    CHECK(key_owner(s, "steps", "alice", "k1").empty());
    CHECK(key_owner(s, "steps", "alice", "k2") == "a");
    commit_ok(s, f.make_entity_change("steps", "b", "alice", "k1"));
    CHECK(key_owner(s, "steps", "alice", "k1") == "b");
    CHECK(commit_answer(s, f.make_entity_change("steps", "c", "alice", "k2")) == "conflict");
    CHECK_FALSE(has_row(s, "steps", "c"));
  }
}

/// The query of one collection, for one user or all.
inline entity_query where(std::string collection, std::optional<std::string> user = std::nullopt) {
  entity_query q;
  q.collection = std::move(collection);
  q.user_id = std::move(user);
  return q;
}

/// Commits a new row that occurred at `when`.
template <class Storage>
void put_row(Storage& s, storage_fixture& f, const char* collection, const char* id, const char* user,
             timestamp when) {
  entity_change c = f.make_entity_change(collection, id, user);
  c.entity.occurred_at = when;
  commit_ok(s, c);
}

/// Rows of two users, saved out of time order; a0, a2 and b0 share a time (then id decides).
template <class Storage>
void put_rows(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;
  put_row(s, f, "steps", "a3", "alice", t0 + 5h);
  put_row(s, f, "steps", "a1", "alice", t0 + 3h);
  put_row(s, f, "steps", "b1", "bob", t0 + 2h);
  put_row(s, f, "steps", "a2", "alice", t0 + 1h);
  put_row(s, f, "steps", "b0", "bob", t0 + 1h);
  put_row(s, f, "steps", "a0", "alice", t0 + 1h);
  put_row(s, f, "heart", "h1", "alice", t0);
}

/// Delivers the create events of the given rows, which marks them synced.
template <class Storage>
void deliver(Storage& s, storage_fixture& f, std::initializer_list<std::string_view> rows) {
  const timestamp t0 = f.t0;
  for (const char* user : {"alice", "bob"}) {
    std::vector<outcome> done;
    for (const event& e : claim(s, f.claim_at(user, t0, 100))) {
      for (std::string_view row : rows)
        if (e.entity_id == row) done.push_back(f.complete(e, t0, "srv-" + e.entity_id));
    }
    CHECK(record(s, done) == done.size());
  }
}

/// `query_entities`: one collection in (occurred_at, id) order, filtered, limited, current.
template <class Storage>
void entity_query_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;

  SECTION("query_entities lists one collection in (occurred_at, id) order, for one user or all") {
    put_rows(s, f);
    CHECK(listed(s, where("steps")) == id_list{"a0", "a2", "b0", "b1", "a1", "a3"});
    CHECK(listed(s, where("steps", "alice")) == id_list{"a0", "a2", "a1", "a3"});
    CHECK(listed(s, where("steps", "bob")) == id_list{"b0", "b1"});
    CHECK(listed(s, where("steps", "carol")).empty());
    CHECK(listed(s, where("heart")) == id_list{"h1"});
    CHECK(listed(s, where("nothing")).empty());
    auto rows = s.query_entities(where("steps", "alice"));
    REQUIRE(rows.has_value());
    REQUIRE(rows->size() == 4);
    CHECK(text_of((*rows)[2]) == text_of(row_of(s, "steps", "a1")));  // whole rows
  }

  SECTION("query_entities filters by sync status and by occurred_at in [from, until)") {
    put_rows(s, f);
    entity_query window = where("steps");
    window.from = t0 + 1h;   // inclusive
    window.until = t0 + 3h;  // exclusive
    CHECK(listed(s, window) == id_list{"a0", "a2", "b0", "b1"});
    window.user_id = "alice";
    CHECK(listed(s, window) == id_list{"a0", "a2"});
    entity_query since = where("steps");
    since.from = t0 + 3h;
    CHECK(listed(s, since) == id_list{"a1", "a3"});
    entity_query before = where("steps");
    before.until = t0 + 2h;
    CHECK(listed(s, before) == id_list{"a0", "a2", "b0"});
    before.user_id = "bob";
    CHECK(listed(s, before) == id_list{"b0"});

    deliver(s, f, {"a2", "b1"});
    entity_query synced = where("steps");
    synced.sync = sync_status::synced;
    CHECK(listed(s, synced) == id_list{"a2", "b1"});
    synced.user_id = "alice";
    CHECK(listed(s, synced) == id_list{"a2"});
    entity_query pending = where("steps");
    pending.sync = sync_status::pending;
    CHECK(listed(s, pending) == id_list{"a0", "b0", "a1", "a3"});
    pending.user_id = "bob";
    CHECK(listed(s, pending) == id_list{"b0"});
    entity_query late_synced = where("steps");
    late_synced.sync = sync_status::synced;
    late_synced.from = t0 + 2h;
    CHECK(listed(s, late_synced) == id_list{"b1"});
  }

  SECTION("query_entities returns the first `limit` matches, counted after filtering") {
    put_rows(s, f);
    entity_query q = where("steps");
    q.limit = 2;
    CHECK(listed(s, q) == id_list{"a0", "a2"});
    q.user_id = "alice";
    q.limit = 3;
    CHECK(listed(s, q) == id_list{"a0", "a2", "a1"});
    q.from = t0 + 2h;
    q.limit = 1;
    CHECK(listed(s, q) == id_list{"a1"});
    q.limit = 0;
    CHECK(listed(s, q).empty());

    deliver(s, f, {"a0", "a2", "b0"});
    entity_query pending = where("steps", "alice");
    pending.sync = sync_status::pending;
    pending.limit = 1;
    CHECK(listed(s, pending) == id_list{"a1"});
    pending.user_id.reset();
    pending.limit = 2;
    CHECK(listed(s, pending) == id_list{"b1", "a1"});
  }

  SECTION("query_entities follows updates of occurred_at and leaves erased rows out") {
    put_rows(s, f);
    entity_change later = f.make_update(row_of(s, "steps", "a0"));
    later.entity.occurred_at = t0 + 6h;
    commit_ok(s, later);
    CHECK(listed(s, where("steps", "alice")) == id_list{"a2", "a1", "a3", "a0"});
    entity_change erase = f.make_update(row_of(s, "steps", "b0"));
    erase.erase = true;
    commit_ok(s, erase);
    CHECK(listed(s, where("steps")) == id_list{"a2", "b1", "a1", "a3", "a0"});
    CHECK(listed(s, where("steps", "bob")) == id_list{"b1"});
  }
}

}  // namespace outbox::testing::conformance
