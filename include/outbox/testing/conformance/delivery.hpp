#pragma once
/// \file
/// Conformance chapters for the way an event travels through a storage: append, claim, the
/// lease, the outcomes `record` applies, and reset. Run by `run_storage_conformance`.

#include <catch2/catch.hpp>

#include <chrono>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <outbox/testing/conformance/fixture.hpp>

namespace outbox::testing::conformance {

/// `append`: seqs, every field kept, all or nothing, what the caller keeps.
template <class Storage>
void append_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;

  SECTION("append assigns increasing seq and stores every field") {
    std::vector<event> batch = {f.make("alice", "k1", 3, "steps.saved"), f.make("alice", "k2")};
    batch[0].payload = std::string("bytes\0with\xffnul", 14);
    append_all(s, batch);
    REQUIRE(batch[0].seq > 0);
    REQUIRE(batch[1].seq > batch[0].seq);
    const event stored = fetch(s, batch[0].id);
    CHECK(stored.seq == batch[0].seq);
    CHECK(stored.type == "steps.saved");
    CHECK(stored.entity_id == "k1");
    CHECK(stored.ordering_key == "k1");
    CHECK(stored.user_id == "alice");
    CHECK(stored.payload == batch[0].payload);
    CHECK(stored.priority == 3);
    CHECK(stored.status == status::pending);
    CHECK(stored.attempts == 0);
    CHECK(stored.max_attempts == 5);
    CHECK(stored.created_at == t0);
  }

  SECTION("append is all or nothing: a bad event in a batch stores none of it") {
    std::vector<event> first = {f.make("alice", "k1")};
    append_all(s, first);
    std::vector<event> batch = {f.make("alice", "k2"), first[0]};  // the second repeats an id
    auto appended = s.append(std::span<event>(batch));
    REQUIRE_FALSE(appended.has_value());
    CHECK(appended.error() == errc::invalid_argument);
    auto missing = s.find(batch[0].id);
    REQUIRE(missing.has_value());
    CHECK_FALSE(missing->has_value());
    CHECK(fetch(s, first[0].id).status == status::pending);  // what was stored before is intact

    std::vector<event> twice = {f.make("alice", "k3")};
    twice.push_back(twice[0]);
    CHECK_FALSE(s.append(std::span<event>(twice)).has_value());
    std::vector<event> nil = {f.make("alice", "k4")};
    nil[0].id = {};
    CHECK_FALSE(s.append(std::span<event>(nil)).has_value());
    std::vector<event> not_pending = {f.make("alice", "k5")};
    not_pending[0].status = status::completed;
    CHECK_FALSE(s.append(std::span<event>(not_pending)).has_value());
    auto stats = s.stats(std::nullopt, t0);
    REQUIRE(stats.has_value());
    CHECK(stats->total() == 1);
  }

  SECTION("append leaves the caller its events' ids, seqs and scalars; a refused one leaves them whole") {
    std::vector<event> refused = {f.make("alice", "k1", 2), f.make("alice", "k2")};
    refused[1].id = refused[0].id;
    const std::vector<event> before = refused;
    REQUIRE_FALSE(s.append(std::span<event>(refused)).has_value());
    for (std::size_t i = 0; i < refused.size(); ++i) {
      CHECK(refused[i].payload == before[i].payload);
      CHECK(refused[i].ordering_key == before[i].ordering_key);
      CHECK(refused[i].user_id == before[i].user_id);
      CHECK(refused[i].seq == 0);
    }
    // Accepted: the strings are the storage's now (it may have moved them), the rest is not.
    std::vector<event> batch = {f.make("alice", "k1", 2), f.make("bob", "k2")};
    const std::vector<event> made = batch;
    REQUIRE(s.append(std::span<event>(batch)).has_value());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      CHECK(batch[i].id == made[i].id);
      CHECK(batch[i].seq > 0);
      CHECK(batch[i].priority == made[i].priority);
      CHECK(batch[i].created_at == made[i].created_at);
      const event stored = fetch(s, made[i].id);
      CHECK(stored.seq == batch[i].seq);
      CHECK(stored.payload == made[i].payload);
      CHECK(stored.ordering_key == made[i].ordering_key);
    }
  }
}

/// `claim`: priority then append order, one user, one event in flight per ordering key,
/// a retry holding back its own key only, and no cost from events waiting for a retry.
template <class Storage>
void claim_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;

  SECTION("claim takes higher priority first, then append order, up to the limit") {
    std::vector<event> batch = {f.make("alice", "a"), f.make("alice", "b", priority::high), f.make("alice", "c"),
                                f.make("alice", "d", priority::low), f.make("alice", "e", priority::high)};
    append_all(s, batch);
    auto first = claim(s, f.claim_at("alice", t0, 3));
    CHECK(keys_of(first) == std::vector<std::string>{"b", "e", "a"});
    auto rest = claim(s, f.claim_at("alice", t0, 10));
    CHECK(keys_of(rest) == std::vector<std::string>{"c", "d"});
  }

  SECTION("only the requested user's events are claimed") {
    std::vector<event> batch = {f.make("alice", "a"), f.make("bob", "b"), f.make("alice", "c")};
    append_all(s, batch);
    auto bobs = claim(s, f.claim_at("bob", t0));
    REQUIRE(bobs.size() == 1);
    CHECK(bobs[0].user_id == "bob");
    auto alices = claim(s, f.claim_at("alice", t0));
    REQUIRE(alices.size() == 2);
    for (const auto& e : alices) CHECK(e.user_id == "alice");
    CHECK(claim(s, f.claim_at("carol", t0)).empty());
  }

  SECTION("an ordering key has at most one event in flight, delivered in append order") {
    std::vector<event> batch = {f.make("alice", "k"), f.make("alice", "k"), f.make("alice", "other")};
    append_all(s, batch);
    auto first = claim(s, f.claim_at("alice", t0));
    CHECK(keys_of(first) == std::vector<std::string>{"k", "other"});
    CHECK(first[0].id == batch[0].id);
    CHECK(claim(s, f.claim_at("alice", t0)).empty());
    CHECK(record(s, {f.complete(first[0], t0)}) == 1);
    auto second = claim(s, f.claim_at("alice", t0));
    REQUIRE(second.size() == 1);
    CHECK(second[0].id == batch[1].id);
  }

  SECTION("a key waiting for its retry holds back only its own later events") {
    std::vector<event> batch = {f.make("alice", "k"), f.make("alice", "k"), f.make("alice", "free")};
    append_all(s, batch);
    auto first = claim(s, f.claim_at("alice", t0, 1));
    REQUIRE(first[0].id == batch[0].id);
    CHECK(record(s, {f.fail(first[0], t0, t0 + 30s)}) == 1);
    CHECK(fetch(s, batch[0].id).status == status::failed);
    CHECK(fetch(s, batch[0].id).last_error == "500");

    auto meanwhile = claim(s, f.claim_at("alice", t0 + 29s));
    REQUIRE(meanwhile.size() == 1);
    CHECK(meanwhile[0].id == batch[2].id);  // the other key is not blocked

    auto retried = claim(s, f.claim_at("alice", t0 + 30s));
    REQUIRE(retried.size() == 1);
    CHECK(retried[0].id == batch[0].id);  // the head again, not its successor
    CHECK(retried[0].attempts == 2);
    CHECK(record(s, {f.complete(retried[0], t0 + 31s)}) == 1);
    auto next = claim(s, f.claim_at("alice", t0 + 31s));
    REQUIRE(next.size() == 1);
    CHECK(next[0].id == batch[1].id);
  }

  SECTION("claiming does not depend on how many events wait for a retry") {
    std::vector<event> batch;
    for (int i = 0; i < 200; ++i) batch.push_back(f.make("alice", "k" + std::to_string(i)));
    append_all(s, batch);
    auto claimed = claim(s, f.claim_at("alice", t0, 200));
    std::vector<outcome> failures;
    for (const auto& e : claimed) failures.push_back(f.fail(e, t0, t0 + 1h));
    CHECK(record(s, failures) == 200);
    std::vector<event> fresh = {f.make("alice", "ready")};
    append_all(s, fresh);
    auto one = claim(s, f.claim_at("alice", t0 + 1s, 10));
    REQUIRE(one.size() == 1);
    CHECK(one[0].id == fresh[0].id);
  }
}

/// Leases: a claim is one, an expired one gives the event back (or kills it on its last
/// attempt), and a result presenting an expired lease is not applied.
template <class Storage>
void lease_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;

  SECTION("a claim is a lease: processing, one attempt counted, a token results must present") {
    std::vector<event> batch = {f.make("alice", "k")};
    append_all(s, batch);
    auto claimed = claim(s, f.claim_at("alice", t0 + 1s, 10, 60s));
    REQUIRE(claimed.size() == 1);
    CHECK(claimed[0].status == status::processing);
    CHECK(claimed[0].attempts == 1);
    CHECK(claimed[0].lease != 0);
    CHECK(claimed[0].lease_until == t0 + 61s);
    CHECK(fetch(s, batch[0].id).status == status::processing);
    CHECK(claim(s, f.claim_at("alice", t0 + 2s)).empty());  // not claimable twice
  }

  SECTION("an expired lease returns the event to pending; the late result is not applied") {
    std::vector<event> batch = {f.make("alice", "k")};
    append_all(s, batch);
    auto stale = claim(s, f.claim_at("alice", t0, 10, 60s));
    auto fresh = claim(s, f.claim_at("alice", t0 + 61s, 10, 60s));  // the first claimer "died"
    REQUIRE(fresh.size() == 1);
    CHECK(fresh[0].attempts == 2);
    CHECK(fresh[0].lease != stale[0].lease);
    CHECK(record(s, {f.complete(stale[0], t0 + 62s, "late")}) == 0);
    const event current = fetch(s, batch[0].id);
    CHECK(current.status == status::processing);
    CHECK(current.remote_id.empty());
    CHECK(record(s, {f.complete(fresh[0], t0 + 63s, "fresh")}) == 1);
    CHECK(fetch(s, batch[0].id).remote_id == "fresh");
  }

  SECTION("a lease that expires during the last attempt makes the event dead") {
    std::vector<event> batch = {f.make("alice", "k")};
    batch[0].max_attempts = 1;
    append_all(s, batch);
    auto claimed = claim(s, f.claim_at("alice", t0, 10, 60s));
    CHECK(claim(s, f.claim_at("alice", t0 + 61s)).empty());
    const event dead = fetch(s, batch[0].id);
    CHECK(dead.status == status::dead);
    CHECK_FALSE(dead.last_error.empty());
  }
}

/// `record`: completion, death, an offline release, and results that must not apply.
template <class Storage>
void outcome_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;

  SECTION("completion records time, remote id and leaves the event out of every claim") {
    std::vector<event> batch = {f.make("alice", "k")};
    append_all(s, batch);
    auto claimed = claim(s, f.claim_at("alice", t0));
    CHECK(record(s, {f.complete(claimed[0], t0 + 5s, "srv-7")}) == 1);
    const event done = fetch(s, batch[0].id);
    CHECK(done.status == status::completed);
    CHECK(done.completed_at == t0 + 5s);
    CHECK(done.updated_at == t0 + 5s);
    CHECK(done.remote_id == "srv-7");
    CHECK(done.attempts == 1);
    CHECK(claim(s, f.claim_at("alice", t0 + 1h)).empty());
  }

  SECTION("a dead head leaves its key: later events of the key proceed") {
    std::vector<event> batch = {f.make("alice", "k"), f.make("alice", "k")};
    append_all(s, batch);
    auto claimed = claim(s, f.claim_at("alice", t0));
    CHECK(record(s, {f.kill(claimed[0], t0, "422 rejected")}) == 1);
    const event dead = fetch(s, batch[0].id);
    CHECK(dead.status == status::dead);
    CHECK(dead.last_error == "422 rejected");
    auto next = claim(s, f.claim_at("alice", t0));
    REQUIRE(next.size() == 1);
    CHECK(next[0].id == batch[1].id);
    CHECK(record(s, {f.complete(next[0], t0)}) == 1);
    CHECK(claim(s, f.claim_at("alice", t0 + 24h)).empty());  // dead is never claimed by itself
  }

  SECTION("an offline release returns the event to pending with its attempt given back") {
    std::vector<event> batch = {f.make("alice", "k")};
    append_all(s, batch);
    auto claimed = claim(s, f.claim_at("alice", t0));
    CHECK(record(s, {f.release(claimed[0], t0)}) == 1);
    const event back = fetch(s, batch[0].id);
    CHECK(back.status == status::pending);
    CHECK(back.attempts == 0);
    auto again = claim(s, f.claim_at("alice", t0));
    REQUIRE(again.size() == 1);
    CHECK(again[0].attempts == 1);
  }

  SECTION("results for unknown ids or wrong leases are not applied; moving to processing is refused") {
    std::vector<event> batch = {f.make("alice", "k")};
    append_all(s, batch);
    auto claimed = claim(s, f.claim_at("alice", t0));
    event forged = claimed[0];
    forged.lease += 1000;
    event unknown = f.make("alice", "nobody");
    unknown.lease = claimed[0].lease;
    std::vector<outcome> outcomes = {f.complete(forged, t0), f.complete(unknown, t0)};
    auto recorded = s.record(std::span<outcome>(outcomes));
    REQUIRE(recorded.has_value());
    CHECK(*recorded == 0);
    CHECK_FALSE(outcomes[0].applied);
    CHECK_FALSE(outcomes[1].applied);
    outcome bad = f.complete(claimed[0], t0);
    bad.to = status::processing;
    std::vector<outcome> invalid = {bad};
    auto refused = s.record(std::span<outcome>(invalid));
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error() == errc::invalid_argument);
    CHECK(fetch(s, batch[0].id).status == status::processing);
  }
}

/// `reset` and `reset_dead`: failed and dead events back to pending, in their key's order.
template <class Storage>
void reset_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;

  SECTION("reset returns failed and dead events to pending with attempts cleared") {
    std::vector<event> batch = {f.make("alice", "a"), f.make("alice", "b"), f.make("alice", "c")};
    append_all(s, batch);
    auto claimed = claim(s, f.claim_at("alice", t0));
    REQUIRE(claimed.size() == 3);
    CHECK(record(s, {f.fail(claimed[0], t0, t0 + 1h), f.kill(claimed[1], t0), f.complete(claimed[2], t0)}) == 3);

    const event_id ids[] = {batch[0].id, batch[1].id, batch[2].id};
    auto reset = s.reset(ids, t0 + 1s);
    REQUIRE(reset.has_value());
    CHECK(*reset == 2);  // the completed one is not reset
    for (int i : {0, 1}) {
      const event e = fetch(s, ids[i]);
      CHECK(e.status == status::pending);
      CHECK(e.attempts == 0);
      CHECK(e.updated_at == t0 + 1s);
      CHECK_FALSE(e.last_error.empty());  // the history stays
    }
    CHECK(fetch(s, ids[2]).status == status::completed);
    auto again = claim(s, f.claim_at("alice", t0 + 1s));  // no waiting for the old retry time
    CHECK(again.size() == 2);
  }

  SECTION("a reset dead event rejoins its key in append order") {
    std::vector<event> batch = {f.make("alice", "k"), f.make("alice", "k")};
    append_all(s, batch);
    auto first = claim(s, f.claim_at("alice", t0));
    CHECK(record(s, {f.kill(first[0], t0)}) == 1);
    auto second = claim(s, f.claim_at("alice", t0));
    REQUIRE(second[0].id == batch[1].id);
    const event_id ids[] = {batch[0].id};
    REQUIRE(*s.reset(ids, t0) == 1);
    CHECK(claim(s, f.claim_at("alice", t0)).empty());  // the key's second event is still in flight
    CHECK(record(s, {f.complete(second[0], t0)}) == 1);
    auto revived = claim(s, f.claim_at("alice", t0));
    REQUIRE(revived.size() == 1);
    CHECK(revived[0].id == batch[0].id);
  }

  SECTION("reset_dead resets one user's dead events, or everyone's") {
    std::vector<event> batch = {f.make("alice", "a"), f.make("bob", "b")};
    append_all(s, batch);
    auto a = claim(s, f.claim_at("alice", t0));
    auto b = claim(s, f.claim_at("bob", t0));
    CHECK(record(s, {f.kill(a[0], t0), f.kill(b[0], t0)}) == 2);
    auto alice_only = s.reset_dead(std::string_view("alice"), t0);
    REQUIRE(alice_only.has_value());
    CHECK(*alice_only == 1);
    CHECK(fetch(s, batch[1].id).status == status::dead);
    auto everyone = s.reset_dead(std::nullopt, t0);
    REQUIRE(everyone.has_value());
    CHECK(*everyone == 1);
    CHECK(fetch(s, batch[1].id).status == status::pending);
  }
}

}  // namespace outbox::testing::conformance
