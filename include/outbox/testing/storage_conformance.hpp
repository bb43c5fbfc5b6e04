#pragma once
/// \file
/// The storage contract as Catch2 (v2) tests. Every shipped storage passes it; run it against
/// your own storage policy with a factory type:
///
///     struct my_factory {
///       using storage_type = my_storage;
///       my_storage make() { return my_storage(...); }   // a fresh, empty storage
///     };
///     OUTBOX_STORAGE_CONFORMANCE_TESTS(my_factory)
///
/// in one test source linked with a Catch2 main. Each SECTION gets a fresh storage.
/// Requires <catch2/catch.hpp>; nothing else in outbox depends on Catch2.

#include <catch2/catch.hpp>

#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "outbox/concepts.hpp"
#include "outbox/event.hpp"
#include "outbox/event_id.hpp"
#include "outbox/storage.hpp"

namespace outbox::testing {

/// Helpers the suite (and storage tests of your own) build events and outcomes with.
class storage_fixture {
 public:
  timestamp t0 = timestamp(std::chrono::seconds(1767225600));  // 2026-01-01T00:00:00Z
  event_id_generator ids{42};

  [[nodiscard]] event make(std::string user, std::string key, int priority = priority::normal,
                           std::string type = "test.event") {
    event e;
    e.id = ids.next(t0);
    e.type = std::move(type);
    e.entity_id = key;
    e.ordering_key = std::move(key);
    e.user_id = std::move(user);
    e.payload = R"({"n":)" + std::to_string(++made_) + "}";
    e.priority = priority;
    e.max_attempts = 5;
    e.created_at = t0;
    e.updated_at = t0;
    return e;
  }

  [[nodiscard]] claim_request claim_at(std::string_view user, timestamp now, std::size_t limit = 10,
                                       std::chrono::seconds lease = std::chrono::seconds(60)) const {
    return {user, now, now + lease, limit};
  }

  [[nodiscard]] static outcome complete(const event& e, timestamp at, std::string remote_id = "r") {
    outcome o;
    o.id = e.id;
    o.lease = e.lease;
    o.to = status::completed;
    o.attempts = e.attempts;
    o.at = at;
    o.remote_id = std::move(remote_id);
    return o;
  }
  [[nodiscard]] static outcome fail(const event& e, timestamp at, timestamp retry_after, std::string why = "500") {
    outcome o;
    o.id = e.id;
    o.lease = e.lease;
    o.to = status::failed;
    o.attempts = e.attempts;
    o.at = at;
    o.retry_after = retry_after;
    o.error = std::move(why);
    return o;
  }
  [[nodiscard]] static outcome kill(const event& e, timestamp at, std::string why = "400") {
    outcome o = fail(e, at, {}, std::move(why));
    o.to = status::dead;
    return o;
  }
  [[nodiscard]] static outcome release(const event& e, timestamp at) {
    outcome o;
    o.id = e.id;
    o.lease = e.lease;
    o.to = status::pending;
    o.attempts = e.attempts - 1;
    o.at = at;
    o.error = "offline";
    return o;
  }

 private:
  int made_ = 0;
};

namespace detail {

template <class Storage>
void append_all(Storage& s, std::vector<event>& events) {
  auto appended = s.append(std::span<event>(events));
  REQUIRE(appended.has_value());
}

template <class Storage>
std::vector<event> claim(Storage& s, const claim_request& r) {
  std::vector<event> out;
  auto claimed = s.claim(r, out);
  REQUIRE(claimed.has_value());
  REQUIRE(*claimed == out.size());
  return out;
}

template <class Storage>
std::size_t record(Storage& s, std::vector<outcome> outcomes) {
  auto recorded = s.record(std::span<outcome>(outcomes));
  REQUIRE(recorded.has_value());
  return *recorded;
}

template <class Storage>
event fetch(Storage& s, event_id id) {
  auto found = s.find(id);
  REQUIRE(found.has_value());
  REQUIRE(found->has_value());
  return **found;
}

inline std::vector<std::string> keys_of(const std::vector<event>& events) {
  std::vector<std::string> keys;
  for (const auto& e : events) keys.push_back(e.ordering_key);
  return keys;
}

}  // namespace detail

/// The suite. `Factory::make()` must return a fresh, empty storage.
template <class Factory>
void run_storage_conformance() {
  using Storage = typename Factory::storage_type;
  static_assert(storage<Storage>, "the factory's storage_type must satisfy outbox::storage");
  using namespace std::chrono_literals;
  using detail::append_all;
  using detail::claim;
  using detail::fetch;
  using detail::record;

  Factory factory;
  Storage s = factory.make();
  storage_fixture f;
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

  SECTION("claim takes higher priority first, then append order, up to the limit") {
    std::vector<event> batch = {f.make("alice", "a"), f.make("alice", "b", priority::high), f.make("alice", "c"),
                                f.make("alice", "d", priority::low), f.make("alice", "e", priority::high)};
    append_all(s, batch);
    auto first = claim(s, f.claim_at("alice", t0, 3));
    CHECK(detail::keys_of(first) == std::vector<std::string>{"b", "e", "a"});
    auto rest = claim(s, f.claim_at("alice", t0, 10));
    CHECK(detail::keys_of(rest) == std::vector<std::string>{"c", "d"});
  }

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
    CHECK(detail::keys_of(first) == std::vector<std::string>{"k", "other"});
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

  SECTION("query pages by status and user in append order") {
    std::vector<event> batch;
    for (int i = 0; i < 5; ++i) batch.push_back(f.make(i % 2 ? "bob" : "alice", "k" + std::to_string(i)));
    append_all(s, batch);
    auto claimed = claim(s, f.claim_at("alice", t0, 1));
    CHECK(record(s, {f.complete(claimed[0], t0)}) == 1);

    auto pending = s.query({.status_is = status::pending, .user_id = std::nullopt, .limit = 10, .after_seq = 0});
    REQUIRE(pending.has_value());
    REQUIRE(pending->size() == 4);
    for (std::size_t i = 1; i < pending->size(); ++i) CHECK((*pending)[i - 1].seq < (*pending)[i].seq);

    auto page1 = s.query({.status_is = status::pending, .user_id = std::nullopt, .limit = 2, .after_seq = 0});
    auto page2 = s.query({.status_is = status::pending, .user_id = std::nullopt, .limit = 2,
                          .after_seq = page1->back().seq});
    REQUIRE(page2->size() == 2);
    CHECK(page2->front().seq > page1->back().seq);

    auto bobs = s.query({.status_is = std::nullopt, .user_id = "bob", .limit = 10, .after_seq = 0});
    REQUIRE(bobs->size() == 2);
    for (const auto& e : *bobs) CHECK(e.user_id == "bob");
    auto done = s.query({.status_is = status::completed, .user_id = "alice", .limit = 10, .after_seq = 0});
    REQUIRE(done->size() == 1);
    CHECK(done->front().id == batch[0].id);
    auto none = s.query({.status_is = status::dead, .user_id = std::nullopt, .limit = 10, .after_seq = 0});
    CHECK(none->empty());
  }

  SECTION("stats count per status and tell the age of the oldest pending and due events") {
    std::vector<event> batch = {f.make("alice", "a"), f.make("alice", "b"), f.make("bob", "c")};
    batch[1].created_at = t0 + 10s;
    append_all(s, batch);
    auto claimed = claim(s, f.claim_at("alice", t0 + 20s, 1));
    CHECK(record(s, {f.fail(claimed[0], t0 + 20s, t0 + 50s)}) == 1);

    auto all = s.stats(std::nullopt, t0 + 30s);
    REQUIRE(all.has_value());
    CHECK(all->count(status::pending) == 2);
    CHECK(all->count(status::failed) == 1);
    CHECK(all->total() == 3);
    REQUIRE(all->oldest_pending_age.has_value());
    CHECK(*all->oldest_pending_age == 30s);  // bob's event, created at t0

    auto alice = s.stats(std::string_view("alice"), t0 + 30s);
    CHECK(alice->count(status::pending) == 1);
    CHECK(*alice->oldest_pending_age == 20s);
    REQUIRE(alice->oldest_due_age.has_value());
    CHECK(*alice->oldest_due_age == 20s);  // "b"; "a" is not due until t0 + 50s

    auto later = s.stats(std::string_view("alice"), t0 + 60s);
    CHECK(*later->oldest_due_age == 60s);  // now "a" is due too, and older
  }

  SECTION("next_wake tells the earliest retry of the user or lease expiry") {
    std::vector<event> batch = {f.make("alice", "a"), f.make("alice", "b")};
    append_all(s, batch);
    auto none = s.next_wake("alice", t0);
    REQUIRE(none.has_value());
    CHECK_FALSE(none->has_value());
    auto claimed = claim(s, f.claim_at("alice", t0, 10, 120s));
    CHECK(**s.next_wake("alice", t0) == t0 + 120s);
    CHECK(record(s, {f.fail(claimed[0], t0, t0 + 30s)}) == 1);
    CHECK(**s.next_wake("alice", t0) == t0 + 30s);
  }

  SECTION("purge deletes completed events older than the cut, nothing else") {
    std::vector<event> batch = {f.make("alice", "a"), f.make("alice", "b"), f.make("alice", "c")};
    append_all(s, batch);
    auto claimed = claim(s, f.claim_at("alice", t0));
    CHECK(record(s, {f.complete(claimed[0], t0), f.complete(claimed[1], t0 + 1h), f.kill(claimed[2], t0)}) == 3);
    auto purged = s.purge_completed(t0 + 30min);
    REQUIRE(purged.has_value());
    CHECK(*purged == 1);
    CHECK_FALSE(s.find(batch[0].id)->has_value());
    CHECK(fetch(s, batch[1].id).status == status::completed);
    CHECK(fetch(s, batch[2].id).status == status::dead);
  }

  SECTION("clamp_schedule pulls retries and leases beyond the limits back to them") {
    std::vector<event> batch = {f.make("alice", "a"), f.make("alice", "b")};
    append_all(s, batch);
    auto claimed = claim(s, f.claim_at("alice", t0, 10, 24h));
    CHECK(record(s, {f.fail(claimed[0], t0, t0 + 24h)}) == 1);
    auto clamped = s.clamp_schedule(t0 + 1h, t0 + 2min);
    REQUIRE(clamped.has_value());
    CHECK(*clamped == 2);
    CHECK(fetch(s, batch[0].id).retry_after == t0 + 1h);
    auto reclaimed = claim(s, f.claim_at("alice", t0 + 3min, 10, 24h));  // the lease ended at t0 + 2min
    REQUIRE(reclaimed.size() == 1);
    CHECK(reclaimed[0].id == batch[1].id);
    auto retried = claim(s, f.claim_at("alice", t0 + 1h));  // the retry, on its clamped time
    REQUIRE(retried.size() == 1);
    CHECK(retried[0].id == batch[0].id);
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

}  // namespace outbox::testing

/// Defines the conformance test case for each factory type given.
#define OUTBOX_STORAGE_CONFORMANCE_TESTS(...)                                                   \
  TEMPLATE_TEST_CASE("storage conformance", "[storage][conformance]", __VA_ARGS__) {            \
    ::outbox::testing::run_storage_conformance<TestType>();                                     \
  }
