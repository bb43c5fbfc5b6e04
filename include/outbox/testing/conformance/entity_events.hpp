#pragma once
/// \file
/// Conformance chapters for the events of `outbox::entity_storage`: replacing and dropping an
/// unsent event, and delivery outcomes written back onto rows. Run by
/// `run_entity_storage_conformance`.

#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <vector>

#include <outbox/testing/conformance/fixture.hpp>

namespace outbox::testing::conformance {

/// `replace` rewrites an unsent event in place and refuses any other target.
template <class Storage>
void replace_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;

  SECTION("replace rewrites the unsent event in place: same id, seq and place in the claim order") {
    const entity_change created = f.make_entity_change("steps", "a", "alice");
    commit_ok(s, created);
    std::vector<event> later = {f.make("alice", "other")};
    append_all(s, later);
    const event original = fetch(s, created.event.id);

    entity_change edit = f.make_replace(row_of(s, "steps", "a"), created.event.id);
    edit.event.type = "steps.rewritten";
    edit.event.payload = bytes("{\"count\":9}\0\x02");
    edit.event.updated_at = t0 + 5s;
    edit.event.priority = priority::high;       // only type, payload and updated_at are taken
    edit.event.ordering_key = "elsewhere";
    edit.event.max_attempts = 1;
    commit_ok(s, edit);

    const event rewritten = fetch(s, created.event.id);
    CHECK(rewritten.seq == original.seq);
    CHECK(rewritten.type == "steps.rewritten");
    CHECK(rewritten.payload == edit.event.payload);
    CHECK(rewritten.updated_at == t0 + 5s);
    CHECK(rewritten.priority == original.priority);
    CHECK(rewritten.ordering_key == original.ordering_key);
    CHECK(rewritten.max_attempts == original.max_attempts);
    CHECK(rewritten.entity_type == original.entity_type);
    CHECK(rewritten.entity_id == original.entity_id);
    CHECK(rewritten.user_id == original.user_id);
    CHECK(rewritten.created_at == original.created_at);
    CHECK(rewritten.status == status::pending);
    CHECK(rewritten.attempts == 0);
    CHECK(event_count(s, t0) == 2);  // no event was added

    const entity_record row = row_of(s, "steps", "a");
    CHECK(row.version == 2);
    CHECK(row.payload == edit.entity.payload);
    CHECK(row.last_event == created.event.id);
    auto claimed = claim(s, f.claim_at("alice", t0 + 5s));
    REQUIRE(claimed.size() == 2);
    CHECK(claimed[0].id == created.event.id);  // not moved behind the event appended after it
    CHECK(claimed[1].id == later[0].id);
  }

  SECTION("replace and drop refuse a target that is claimed, failed, completed, dead or missing") {
    const char* const names[] = {"processing", "failed", "completed", "dead"};
    for (const char* name : names) commit_ok(s, f.make_entity_change("steps", name, "alice"));
    auto claimed = claim(s, f.claim_at("alice", t0, 10, 1h));
    REQUIRE(claimed.size() == 4);  // in append order: one per name
    CHECK(record(s, {f.fail(claimed[1], t0, t0 + 1h), f.complete(claimed[2], t0), f.kill(claimed[3], t0)}) == 3);

    for (const char* name : names) {
      INFO("the target event is " << name);
      const entity_record row = row_of(s, "steps", name);  // after any write-back: only the target is wrong
      const std::string before = snapshot(s, {{"steps", name}});
      CHECK(commit_answer(s, f.make_replace(row, row.last_event)) == "conflict");
      CHECK(commit_answer(s, f.make_drop(row, row.last_event)) == "conflict");
      CHECK(snapshot(s, {{"steps", name}}) == before);
    }

    const event_id never_stored = f.ids.next(t0);
    const event_id gone = row_of(s, "steps", "completed").last_event;
    auto purged = s.purge_completed(t0 + 1s);
    REQUIRE(purged.has_value());
    REQUIRE(*purged == 1);
    REQUIRE_FALSE(has_event(s, gone));
    const entity_record row = row_of(s, "steps", "processing");
    const std::string before = snapshot(s, {{"steps", "processing"}});
    CHECK(commit_answer(s, f.make_replace(row, never_stored)) == "conflict");
    CHECK(commit_answer(s, f.make_drop(row, never_stored)) == "conflict");
    CHECK(commit_answer(s, f.make_replace(row, gone)) == "conflict");
    CHECK(commit_answer(s, f.make_drop(row, gone)) == "conflict");
    CHECK(snapshot(s, {{"steps", "processing"}}) == before);
  }
}

/// `drop` deletes an unsent event; an expired lease makes a target seen, a release does not.
template <class Storage>
void drop_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;

  SECTION("a target whose lease expired counts as seen; one released while offline does not") {
    const entity_change expired = f.make_entity_change("steps", "a", "alice");
    const entity_change released = f.make_entity_change("steps", "b", "alice");
    commit_ok(s, expired);
    commit_ok(s, released);
    auto first = claim(s, f.claim_at("alice", t0, 10, 60s));
    REQUIRE(first.size() == 2);
    CHECK(record(s, {f.release(first[1], t0)}) == 1);  // offline: the attempt is given back
    // An urgent event takes the only slot of the next claim, which expires the first lease:
    // "a" is pending again with its attempt counted, and may have reached the backend.
    std::vector<event> urgent = {f.make("alice", "urgent", priority::high)};
    append_all(s, urgent);
    auto next = claim(s, f.claim_at("alice", t0 + 61s, 1));
    REQUIRE(next.size() == 1);
    REQUIRE(next[0].id == urgent[0].id);
    REQUIRE(fetch(s, expired.event.id).status == status::pending);
    REQUIRE(fetch(s, expired.event.id).attempts == 1);
    REQUIRE(fetch(s, released.event.id).status == status::pending);
    REQUIRE(fetch(s, released.event.id).attempts == 0);

    const entity_record a = row_of(s, "steps", "a");
    const std::string before = snapshot(s, {{"steps", "a"}});
    CHECK(commit_answer(s, f.make_replace(a, expired.event.id)) == "conflict");
    CHECK(commit_answer(s, f.make_drop(a, expired.event.id)) == "conflict");
    CHECK(snapshot(s, {{"steps", "a"}}) == before);

    entity_change edit = f.make_replace(row_of(s, "steps", "b"), released.event.id);
    edit.event.type = "steps.rewritten";
    commit_ok(s, edit);
    CHECK(fetch(s, released.event.id).type == "steps.rewritten");
  }

  SECTION("drop deletes the unsent event, erase the row, and the key's next event moves up") {
    // Two entities sharing one ordering key, as a custom ordering_key trait makes them.
    entity_change a = f.make_entity_change("profile", "a", "alice", "ka");
    entity_change b = f.make_entity_change("profile", "b", "alice", "kb");
    a.event.ordering_key = "profile-of-alice";
    b.event.ordering_key = "profile-of-alice";
    commit_ok(s, a);
    commit_ok(s, b);
    CHECK(s.stats(std::nullopt, t0).value().count(status::pending) == 2);  // (a storage may keep counts from here)

    commit_ok(s, f.make_drop(row_of(s, "profile", "a"), a.event.id));
    CHECK_FALSE(has_row(s, "profile", "a"));
    CHECK(key_owner(s, "profile", "alice", "ka").empty());
    CHECK_FALSE(has_event(s, a.event.id));
    const auto events = all_events(s);
    REQUIRE(events.size() == 1);
    CHECK(events[0].id == b.event.id);
    auto stats = s.stats(std::nullopt, t0);
    REQUIRE(stats.has_value());
    CHECK(stats->total() == 1);
    CHECK(stats->count(status::pending) == 1);
    CHECK(row_of(s, "profile", "b").version == 1);  // the other row is untouched
    auto claimed = claim(s, f.claim_at("alice", t0));
    REQUIRE(claimed.size() == 1);
    CHECK(claimed[0].id == b.event.id);
  }

  SECTION("dropping an event queued behind one in flight keeps the key's line intact") {
    const entity_change created = f.make_entity_change("steps", "a", "alice");
    commit_ok(s, created);
    auto in_flight = claim(s, f.claim_at("alice", t0, 10, 1h));
    REQUIRE(in_flight.size() == 1);
    const entity_change update = f.make_update(row_of(s, "steps", "a"));
    commit_ok(s, update);  // queued behind the create
    commit_ok(s, f.make_drop(row_of(s, "steps", "a"), update.event.id));
    CHECK_FALSE(has_event(s, update.event.id));
    CHECK(claim(s, f.claim_at("alice", t0)).empty());  // the create is still in flight
    // Its delivery completes though the row is gone; nothing is left to claim.
    CHECK(record(s, {f.complete(in_flight[0], t0 + 1s)}) == 1);
    CHECK_FALSE(has_row(s, "steps", "a"));
    CHECK(claim(s, f.claim_at("alice", t0 + 1s)).empty());
    CHECK(event_count(s, t0 + 1s) == 1);
  }
}

/// Delivery outcomes written onto the row: remote id, synced, the error of a dead event.
template <class Storage>
void write_back_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;

  SECTION("delivering the row's latest event sets its remote id, marks it synced, clears sync_error") {
    entity_change c = f.make_entity_change("steps", "a", "alice", "k");
    c.entity.sync_error = "an earlier change was rejected";
    commit_ok(s, c);
    const entity_record before = row_of(s, "steps", "a");
    auto claimed = claim(s, f.claim_at("alice", t0));
    CHECK(record(s, {f.complete(claimed[0], t0 + 1s, "srv-1")}) == 1);

    const entity_record after = row_of(s, "steps", "a");
    CHECK(after.remote_id == "srv-1");
    CHECK(after.sync == sync_status::synced);
    CHECK(after.sync_error.empty());
    CHECK(after.version == before.version + 1);  // a write-back is a write
    CHECK(after.payload == before.payload);
    CHECK(after.last_event == before.last_event);
    CHECK(after.natural_key == before.natural_key);
    CHECK(after.occurred_at == before.occurred_at);
    CHECK(after.created_at == before.created_at);
    CHECK(key_owner(s, "steps", "alice", "k") == "a");

    // Whoever read the row before the write-back must read it again.
    CHECK(commit_answer(s, f.make_update(before)) == "conflict");
    commit_ok(s, f.make_update(after));
    CHECK(row_of(s, "steps", "a").version == after.version + 1);
  }

  SECTION("delivering an older event sets the remote id only: a newer change is on its way") {
    commit_ok(s, f.make_entity_change("steps", "a", "alice"));
    auto first = claim(s, f.claim_at("alice", t0));
    const entity_change update = f.make_update(row_of(s, "steps", "a"));
    commit_ok(s, update);
    CHECK(record(s, {f.complete(first[0], t0 + 1s, "srv-1")}) == 1);
    entity_record row = row_of(s, "steps", "a");
    CHECK(row.remote_id == "srv-1");
    CHECK(row.sync == sync_status::pending);
    CHECK(row.last_event == update.event.id);
    CHECK(row.version == 3);

    auto second = claim(s, f.claim_at("alice", t0 + 1s));
    REQUIRE(second.size() == 1);
    REQUIRE(second[0].id == update.event.id);
    CHECK(record(s, {f.complete(second[0], t0 + 2s, "")}) == 1);  // no id this time
    row = row_of(s, "steps", "a");
    CHECK(row.sync == sync_status::synced);
    CHECK(row.remote_id == "srv-1");  // an empty remote id keeps the known one
    CHECK(row.version == 4);
  }

  SECTION("a dead event writes its error onto the row, which stays pending") {
    entity_change c = f.make_entity_change("weight", "w", "alice");
    c.entity.remote_id = "srv-0";
    commit_ok(s, c);
    auto claimed = claim(s, f.claim_at("alice", t0));
    CHECK(record(s, {f.kill(claimed[0], t0, "422 weight must be positive")}) == 1);
    const entity_record row = row_of(s, "weight", "w");
    CHECK(row.sync_error == "422 weight must be positive");
    CHECK(row.sync == sync_status::pending);
    CHECK(row.remote_id == "srv-0");
    CHECK(row.version == 2);
  }
}

/// Outcomes that must leave rows alone, and lease expiry that writes back like a death.
template <class Storage>
void write_back_limits_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;

  SECTION("failed, released, stale and expired-with-attempts-left outcomes leave the row alone") {
    const entity_change c = f.make_entity_change("steps", "a", "alice");
    commit_ok(s, c);
    const std::string untouched = text_of(row_of(s, "steps", "a"));
    auto first = claim(s, f.claim_at("alice", t0, 10, 60s));
    CHECK(record(s, {f.fail(first[0], t0, t0 + 30s, "503")}) == 1);
    CHECK(text_of(row_of(s, "steps", "a")) == untouched);
    auto second = claim(s, f.claim_at("alice", t0 + 30s, 10, 60s));
    REQUIRE(second.size() == 1);
    CHECK(record(s, {f.release(second[0], t0 + 30s)}) == 1);
    CHECK(text_of(row_of(s, "steps", "a")) == untouched);
    auto stale = claim(s, f.claim_at("alice", t0 + 30s, 10, 60s));
    REQUIRE(stale.size() == 1);
    auto fresh = claim(s, f.claim_at("alice", t0 + 91s, 10, 60s));  // the lease ran out, attempts left
    REQUIRE(fresh.size() == 1);
    CHECK(text_of(row_of(s, "steps", "a")) == untouched);
    CHECK(record(s, {f.complete(stale[0], t0 + 92s, "late")}) == 0);
    CHECK(text_of(row_of(s, "steps", "a")) == untouched);
    CHECK(record(s, {f.complete(fresh[0], t0 + 93s, "srv-1")}) == 1);
    CHECK(row_of(s, "steps", "a").remote_id == "srv-1");
  }

  SECTION("only an event naming an entity type writes back, and only onto that collection's row") {
    commit_ok(s, f.make_entity_change("steps", "a", "alice"));
    std::vector<event> others = {f.make("alice", "plain"), f.make("alice", "weight/a")};
    others[0].entity_id = "a";  // no entity_type: not a Repository's event
    others[1].entity_id = "a";
    others[1].entity_type = "weight";  // names a row that does not exist
    append_all(s, others);
    auto claimed = claim(s, f.claim_at("alice", t0));
    REQUIRE(claimed.size() == 3);
    CHECK(record(s, {f.complete(claimed[1], t0, "srv-plain"), f.kill(claimed[2], t0, "422")}) == 2);
    const entity_record row = row_of(s, "steps", "a");
    CHECK(row.version == 1);
    CHECK(row.remote_id.empty());
    CHECK(row.sync_error.empty());
    CHECK_FALSE(has_row(s, "weight", "a"));  // a write-back never creates a row
  }

  SECTION("a lease that runs out on the last attempt kills the event and writes its error onto the row") {
    entity_change c = f.make_entity_change("steps", "a", "alice");
    c.event.max_attempts = 1;
    commit_ok(s, c);
    auto claimed = claim(s, f.claim_at("alice", t0, 10, 60s));
    REQUIRE(claimed.size() == 1);
    CHECK(claim(s, f.claim_at("alice", t0 + 61s)).empty());
    const event dead = fetch(s, c.event.id);
    REQUIRE(dead.status == status::dead);
    REQUIRE_FALSE(dead.last_error.empty());
    const entity_record row = row_of(s, "steps", "a");
    CHECK(row.sync_error == dead.last_error);
    CHECK(row.sync == sync_status::pending);
    CHECK(row.version == 2);
  }
}

}  // namespace outbox::testing::conformance
