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
///     OUTBOX_ENTITY_STORAGE_CONFORMANCE_TESTS(my_factory)   // if it also keeps entities
///
/// in one test source linked with a Catch2 main. Each SECTION gets a fresh storage.
/// Requires <catch2/catch.hpp>; nothing else in outbox depends on Catch2.

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <initializer_list>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <outbox/outbox.hpp>  // the single header provides it too

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

  // ---- the entity half ------------------------------------------------------------------------

  /// A new row and the event creating it, as a Repository commits them for an entity not stored
  /// yet: expected_version 0, op append; the event names the row (entity_type, entity_id), is
  /// ordered by "collection/id", and is the row's `last_event`. Times are `t0`.
  [[nodiscard]] entity_change make_entity_change(std::string collection, std::string id, std::string user,
                                                 std::string natural_key = {}) {
    entity_change c;
    c.event = make(user, collection + "/" + id, priority::normal, collection + ".created");
    c.event.entity_type = collection;
    c.event.entity_id = id;
    c.entity.collection = std::move(collection);
    c.entity.id = std::move(id);
    c.entity.user_id = std::move(user);
    c.entity.natural_key = std::move(natural_key);
    c.entity.payload = next_entity_payload();
    c.entity.occurred_at = t0;
    c.entity.created_at = t0;
    c.entity.updated_at = t0;
    c.entity.last_event = c.event.id;
    return c;
  }

  /// The next change of a stored row, read as `row`: expects its version, carries a new payload
  /// and appends an ".updated" event that becomes the row's `last_event`.
  [[nodiscard]] entity_change make_update(const entity_record& row) {
    entity_change c;
    c.entity = row;
    c.expected_version = row.version;
    c.entity.payload = next_entity_payload();
    c.event = make(row.user_id, row.collection + "/" + row.id, priority::normal, row.collection + ".updated");
    c.event.entity_type = row.collection;
    c.event.entity_id = row.id;
    c.entity.last_event = c.event.id;
    return c;
  }

  /// The next change of `row` carried by its unsent event `target` instead of a new one (op
  /// replace): what a Repository commits for an edit while the previous one is still unsent.
  [[nodiscard]] entity_change make_replace(const entity_record& row, event_id target) {
    entity_change c;
    c.entity = row;
    c.expected_version = row.version;
    c.entity.payload = next_entity_payload();
    c.entity.last_event = target;
    c.op = entity_change::event_op::replace;
    c.target = target;
    c.event.type = row.collection + ".updated";
    c.event.payload = c.entity.payload;
    c.event.updated_at = t0;
    return c;
  }

  /// Deletes `row` together with its unsent event `target` (erase, op drop): what a Repository
  /// commits when an entity the backend never heard of is removed.
  [[nodiscard]] static entity_change make_drop(const entity_record& row, event_id target) {
    entity_change c;
    c.entity = row;
    c.expected_version = row.version;
    c.erase = true;
    c.entity.last_event = {};
    c.op = entity_change::event_op::drop;
    c.target = target;
    return c;
  }

 private:
  std::string next_entity_payload() { return R"({"entity":)" + std::to_string(++made_) + "}"; }

  int made_ = 0;
};

/// Appends copies of `events` and, if that succeeds, copies the seqs (and leases) the storage
/// gave them back: a storage may move from what it appends, and a test compares the stored
/// events with the ones it made.
template <class Storage>
result<void> append_keeping(Storage& s, std::vector<event>& events) {
  std::vector<event> copies = events;
  auto appended = s.append(std::span<event>(copies));
  if (appended)
    for (std::size_t i = 0; i < events.size(); ++i) {
      events[i].seq = copies[i].seq;
      events[i].lease = copies[i].lease;
    }
  return appended;
}

namespace detail {

template <class Storage>
void append_all(Storage& s, std::vector<event>& events) {
  auto appended = append_keeping(s, events);
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

/// Checks `stats` against the events themselves, read one by one from `query`: for each of
/// `users`, and for all of them. A storage that keeps counts rather than counting must keep them
/// through every kind of write.
template <class Storage>
void check_stats(Storage& s, std::initializer_list<std::string_view> users, timestamp now) {
  event_query q;
  q.limit = 1'000'000;
  auto events = s.query(q);  // in append order
  REQUIRE(events.has_value());
  auto expect = [&](std::optional<std::string_view> user) {
    using line = std::pair<std::string_view, std::string_view>;  // (user, ordering key)
    std::vector<line> done;  // lines in flight, or whose head is known
    for (const auto& e : *events)
      if (e.status == status::processing) done.emplace_back(e.user_id, e.ordering_key);
    event_stats x;
    for (const auto& e : *events) {
      if (user && e.user_id != *user) continue;
      ++x.counts[static_cast<std::size_t>(e.status)];
      if (e.status == status::pending && !x.oldest_pending_age) x.oldest_pending_age = now - e.created_at;
      const bool undelivered = e.status == status::pending || e.status == status::failed;
      const line l{e.user_id, e.ordering_key};
      if (!undelivered || std::find(done.begin(), done.end(), l) != done.end()) continue;
      done.push_back(l);  // `e` heads its line, none of which is in flight: claimable if ready or due
      const bool claimable = e.status == status::pending || e.retry_after <= now;
      if (claimable && !x.oldest_due_age) x.oldest_due_age = now - e.created_at;
    }
    return x;
  };
  auto check = [&](std::optional<std::string_view> user) {
    INFO("user " << (user ? std::string(*user) : std::string("(all)")));
    auto stats = s.stats(user, now);
    REQUIRE(stats.has_value());
    const event_stats expected = expect(user);
    CHECK(stats->counts == expected.counts);
    CHECK(stats->oldest_pending_age == expected.oldest_pending_age);
    CHECK(stats->oldest_due_age == expected.oldest_due_age);
  };
  for (auto user : users) check(user);
  check(std::nullopt);
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
    CHECK(*all->oldest_pending_age == 20s);  // "b": appended before bob's "c", though created later

    auto alice = s.stats(std::string_view("alice"), t0 + 30s);
    CHECK(alice->count(status::pending) == 1);
    CHECK(*alice->oldest_pending_age == 20s);
    REQUIRE(alice->oldest_due_age.has_value());
    CHECK(*alice->oldest_due_age == 20s);  // "b"; "a" is not due until t0 + 50s

    auto later = s.stats(std::string_view("alice"), t0 + 60s);
    CHECK(*later->oldest_due_age == 60s);  // now "a" is due too, and older

    // A user with nothing pending still has a claimable event once a retry comes due.
    auto bobs = claim(s, f.claim_at("bob", t0 + 20s, 1));
    CHECK(record(s, {f.fail(bobs[0], t0 + 20s, t0 + 40s)}) == 1);
    auto bob = s.stats(std::string_view("bob"), t0 + 30s);
    CHECK(bob->count(status::pending) == 0);
    CHECK_FALSE(bob->oldest_due_age.has_value());  // "c" waits for its retry
    bob = s.stats(std::string_view("bob"), t0 + 60s);
    REQUIRE(bob->oldest_due_age.has_value());
    CHECK(*bob->oldest_due_age == 60s);  // "c", due again since t0 + 40s
  }

  SECTION("stats count completed events as outcomes complete them and purges remove them") {
    std::vector<event> batch = {f.make("alice", "a"), f.make("alice", "b"), f.make("alice", "c"),
                                f.make("bob", "d"), f.make("bob", "e")};
    append_all(s, batch);
    auto alices = claim(s, f.claim_at("alice", t0));
    auto bobs = claim(s, f.claim_at("bob", t0));
    REQUIRE(alices.size() == 3);
    REQUIRE(bobs.size() == 2);
    CHECK(record(s, {f.complete(alices[0], t0), f.complete(alices[1], t0 + 1h), f.kill(alices[2], t0),
                     f.complete(bobs[0], t0), f.fail(bobs[1], t0, t0 + 1min)}) == 5);
    auto count = [&](std::optional<std::string_view> user, status st) { return s.stats(user, t0)->count(st); };
    CHECK(count("alice", status::completed) == 2);
    CHECK(count("bob", status::completed) == 1);
    CHECK(count(std::nullopt, status::completed) == 3);
    CHECK(count("alice", status::dead) == 1);
    CHECK(count("bob", status::failed) == 1);
    CHECK(count("carol", status::completed) == 0);

    CHECK(s.purge_completed(t0 + 30min).value() == 2);  // alice's first and bob's
    CHECK(count("alice", status::completed) == 1);
    CHECK(count("bob", status::completed) == 0);
    CHECK(count(std::nullopt, status::completed) == 1);
    CHECK(s.stats(std::nullopt, t0)->total() == 3);
    // A stale outcome (its lease gone) completes nothing.
    CHECK(record(s, {f.complete(alices[0], t0)}) == 0);
    CHECK(count(std::nullopt, status::completed) == 1);
  }

  SECTION("stats agree with the events through every kind of write, in a random walk of them") {
    // Counts, the oldest pending event and the oldest claimable one, as computed from the events.
    std::mt19937 random(20261122);
    auto pick = [&](int n) { return static_cast<int>(random() % static_cast<unsigned>(n)); };
    const std::array<std::string, 2> users = {"alice", "bob"};
    timestamp now = t0;
    std::vector<event> in_flight;  // as claimed: some of their leases run out, some are stale
    for (int step = 0; step < 300; ++step) {
      const std::string& user = users[static_cast<std::size_t>(pick(2))];
      switch (pick(8)) {
        case 0:
        case 1: {
          std::vector<event> batch;
          for (int i = pick(4); i >= 0; --i) {
            batch.push_back(f.make(user, "k" + std::to_string(pick(5)), pick(3) - 1));  // priorities -1 to 1
            batch.back().max_attempts = 1 + pick(3);  // so some leases run out on the last attempt
            batch.back().created_at = now - std::chrono::seconds(pick(100));  // ages that tell events apart
          }
          append_all(s, batch);
          break;
        }
        case 2:
        case 3: {
          auto claimed = claim(s, f.claim_at(user, now, static_cast<std::size_t>(1 + pick(3)), 30s));
          in_flight.insert(in_flight.end(), claimed.begin(), claimed.end());
          break;
        }
        case 4: {  // outcomes for some claims, of every kind; the stale ones are not applied
          std::vector<outcome> outcomes;
          for (std::size_t i = 0; i < in_flight.size();) {
            if (pick(2) == 0) {
              ++i;
              continue;
            }
            const event& e = in_flight[i];
            switch (pick(4)) {
              case 0: outcomes.push_back(storage_fixture::complete(e, now)); break;
              case 1: outcomes.push_back(storage_fixture::fail(e, now, now + std::chrono::seconds(pick(60)))); break;
              case 2: outcomes.push_back(storage_fixture::kill(e, now)); break;
              default: outcomes.push_back(storage_fixture::release(e, now)); break;
            }
            in_flight.erase(in_flight.begin() + static_cast<std::ptrdiff_t>(i));
          }
          REQUIRE(s.record(std::span<outcome>(outcomes)).has_value());
          break;
        }
        case 5: now += std::chrono::seconds(1 + pick(25)); break;  // leases expire, retries come due
        case 6: {
          event_query q;
          q.status_is = pick(2) == 0 ? status::failed : status::dead;
          q.limit = 3;
          auto found = s.query(q);
          REQUIRE(found.has_value());
          std::vector<event_id> ids;
          for (const auto& e : *found) ids.push_back(e.id);
          if (pick(2) == 0) ids.push_back(f.make(user, "gone").id);  // unknown: nothing to reset
          REQUIRE(s.reset(std::span<const event_id>(ids), now).has_value());
          break;
        }
        default:
          if (pick(2) == 0) {
            const auto whose = pick(2) == 0 ? std::optional<std::string_view>(user) : std::nullopt;
            REQUIRE(s.reset_dead(whose, now).has_value());
          } else {
            REQUIRE(s.purge_completed(now - std::chrono::seconds(pick(40))).has_value());
          }
          break;
      }
      INFO("step " << step);
      detail::check_stats(s, {"alice", "bob", "carol"}, now);
    }
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

namespace detail {

/// A string literal with its embedded NUL bytes kept.
template <std::size_t N>
std::string bytes(const char (&text)[N]) {
  return std::string(text, N - 1);
}

/// Printable text for any bytes, so a failed comparison shows where two values differ.
inline std::string escaped(std::string_view text) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f && c != '\\') {
      out += c;
    } else {
      out += "\\x";
      out += digits[byte >> 4];
      out += digits[byte & 0xF];
    }
  }
  return out;
}

inline std::string micros(timestamp t) { return std::to_string(to_micros(t)); }

/// Every field of a row, at the microsecond precision storages keep times in.
inline std::string text_of(const entity_record& r) {
  return r.collection + "/" + r.id + " user=" + r.user_id + " key=" + escaped(r.natural_key) +
         " payload=" + escaped(r.payload) + " occurred=" + micros(r.occurred_at) + " sync=" +
         std::string(to_string(r.sync)) + " remote=" + escaped(r.remote_id) + " error=" + escaped(r.sync_error) +
         " last=" + r.last_event.to_string() + " version=" + std::to_string(r.version) +
         " created=" + micros(r.created_at) + " updated=" + micros(r.updated_at);
}

/// Every field of an event but the lease token.
inline std::string text_of(const event& e) {
  return e.id.to_string() + " seq=" + std::to_string(e.seq) + " type=" + e.type + " entity=" + e.entity_type +
         "/" + e.entity_id + " key=" + e.ordering_key + " user=" + e.user_id + " payload=" + escaped(e.payload) +
         " priority=" + std::to_string(e.priority) + " status=" + std::string(to_string(e.status)) +
         " attempts=" + std::to_string(e.attempts) + "/" + std::to_string(e.max_attempts) +
         " created=" + micros(e.created_at) + " updated=" + micros(e.updated_at) +
         " retry=" + micros(e.retry_after) + " completed=" + micros(e.completed_at) +
         " error=" + escaped(e.last_error) + " remote=" + escaped(e.remote_id);
}

template <class Storage>
void commit_ok(Storage& s, const entity_change& c) {
  auto committed = s.commit(c);
  if (!committed) FAIL("commit of " << c.entity.collection << "/" << c.entity.id << " failed: " << committed.error().what());
}

/// What a commit answered: "ok", "conflict", "invalid_argument", or another error's text.
template <class Storage>
std::string commit_answer(Storage& s, const entity_change& c) {
  auto committed = s.commit(c);
  if (committed) return "ok";
  if (committed.error() == errc::conflict) return "conflict";
  if (committed.error() == errc::invalid_argument) return "invalid_argument";
  return committed.error().what();
}

template <class Storage>
std::optional<entity_record> find_row(Storage& s, std::string_view collection, std::string_view id) {
  auto found = s.find_entity(collection, id);
  REQUIRE(found.has_value());
  return *found;
}

template <class Storage>
entity_record row_of(Storage& s, std::string_view collection, std::string_view id) {
  auto found = find_row(s, collection, id);
  REQUIRE(found.has_value());
  return *found;
}

template <class Storage>
bool has_row(Storage& s, std::string_view collection, std::string_view id) {
  return find_row(s, collection, id).has_value();
}

template <class Storage>
bool has_event(Storage& s, event_id id) {
  auto found = s.find(id);
  REQUIRE(found.has_value());
  return found->has_value();
}

/// The id of the row holding a natural key, or "" if none does.
template <class Storage>
std::string key_owner(Storage& s, std::string_view collection, std::string_view user, std::string_view key) {
  auto found = s.find_entity_by_key(collection, user, key);
  REQUIRE(found.has_value());
  if (!found->has_value()) return {};
  const entity_record& row = **found;
  CHECK(row.collection == collection);
  CHECK(row.user_id == user);
  CHECK(row.natural_key == key);
  return row.id;
}

template <class Storage>
std::vector<event> all_events(Storage& s) {
  event_query q;
  q.limit = 100'000;
  auto events = s.query(q);
  REQUIRE(events.has_value());
  return *events;
}

template <class Storage>
std::size_t event_count(Storage& s, timestamp now) {
  auto stats = s.stats(std::nullopt, now);
  REQUIRE(stats.has_value());
  return stats->total();
}

/// The given rows and every event, as text: equal snapshots mean nothing changed.
template <class Storage>
std::string snapshot(Storage& s, std::initializer_list<std::pair<std::string_view, std::string_view>> rows) {
  std::string text;
  for (const auto& [collection, id] : rows) {
    auto row = find_row(s, collection, id);
    text += row ? text_of(*row) : std::string(collection) + "/" + std::string(id) + " absent";
    text += '\n';
  }
  for (const event& e : all_events(s)) text += text_of(e) + '\n';
  return text;
}

/// The ids query_entities lists, in its order.
template <class Storage>
std::vector<std::string> listed(Storage& s, const entity_query& q) {
  auto rows = s.query_entities(q);
  REQUIRE(rows.has_value());
  std::vector<std::string> ids;
  for (const auto& row : *rows) ids.push_back(row.id);
  return ids;
}

}  // namespace detail

/// The entity half of the contract (`outbox::entity_storage`), for storages that also keep the
/// rows a Repository writes. `Factory::make()` must return a fresh, empty storage.
///
/// In short: `commit` applies a whole `entity_change` (row and event) or, answering
/// `errc::conflict` / `errc::invalid_argument`, nothing at all; rows carry a version the storage
/// bumps on every write; natural keys are unique per (collection, user); `replace` and `drop`
/// touch only an event no transport can have seen (pending, attempts == 0); `record` and lease
/// expiry write delivery outcomes back onto the row named by the event's entity_type/entity_id.
template <class Factory>
void run_entity_storage_conformance() {
  using Storage = typename Factory::storage_type;
  static_assert(entity_storage<Storage>, "the factory's storage_type must satisfy outbox::entity_storage");
  using namespace std::chrono_literals;
  using detail::append_all;
  using detail::claim;
  using detail::commit_answer;
  using detail::commit_ok;
  using detail::fetch;
  using detail::has_event;
  using detail::has_row;
  using detail::key_owner;
  using detail::listed;
  using detail::record;
  using detail::row_of;
  using detail::snapshot;
  using id_list = std::vector<std::string>;

  Factory factory;
  Storage s = factory.make();
  storage_fixture f;
  const timestamp t0 = f.t0;

  // ---- commit --------------------------------------------------------------------------------

  SECTION("commit with an append stores the row as given and its event, in one write") {
    entity_change c = f.make_entity_change("steps", "a", "alice", "2026-11-21T09");
    c.entity.payload = detail::bytes("{\"count\":412}\0\xff tail");
    c.entity.occurred_at = t0 + 9h + 123456us;  // times round-trip at microsecond precision
    c.entity.created_at = t0 + 1s;
    c.entity.updated_at = t0 + 2s;
    c.entity.sync = sync_status::synced;        // stored as given: the row is the caller's
    c.entity.remote_id = "srv-0";
    c.entity.sync_error = "an earlier reason";
    c.entity.version = 77;                      // ignored: the storage owns the version
    c.event.payload = detail::bytes("{\"n\":1}\0\x01");
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
    CHECK(detail::text_of(**by_key) == detail::text_of(row));

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
    CHECK(detail::event_count(s, t0) == 3);
  }

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

  SECTION("an invalid appended event (nil or duplicate id, not pending) is invalid_argument and changes nothing") {
    entity_change nil = f.make_entity_change("steps", "a", "alice", "k");
    nil.event.id = {};
    CHECK(commit_answer(s, nil) == "invalid_argument");
    CHECK_FALSE(has_row(s, "steps", "a"));
    CHECK(key_owner(s, "steps", "alice", "k").empty());
    CHECK(detail::event_count(s, t0) == 0);

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

  // ---- replace and drop ----------------------------------------------------------------------

  SECTION("replace rewrites the unsent event in place: same id, seq and place in the claim order") {
    const entity_change created = f.make_entity_change("steps", "a", "alice");
    commit_ok(s, created);
    std::vector<event> later = {f.make("alice", "other")};
    append_all(s, later);
    const event original = fetch(s, created.event.id);

    entity_change edit = f.make_replace(row_of(s, "steps", "a"), created.event.id);
    edit.event.type = "steps.rewritten";
    edit.event.payload = detail::bytes("{\"count\":9}\0\x02");
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
    CHECK(detail::event_count(s, t0) == 2);  // no event was added

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
    const auto events = detail::all_events(s);
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
    CHECK(detail::event_count(s, t0 + 1s) == 1);
  }

  // ---- write-back ------------------------------------------------------------------------------

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

  SECTION("failed, released, stale and expired-with-attempts-left outcomes leave the row alone") {
    const entity_change c = f.make_entity_change("steps", "a", "alice");
    commit_ok(s, c);
    const std::string untouched = detail::text_of(row_of(s, "steps", "a"));
    auto first = claim(s, f.claim_at("alice", t0, 10, 60s));
    CHECK(record(s, {f.fail(first[0], t0, t0 + 30s, "503")}) == 1);
    CHECK(detail::text_of(row_of(s, "steps", "a")) == untouched);
    auto second = claim(s, f.claim_at("alice", t0 + 30s, 10, 60s));
    REQUIRE(second.size() == 1);
    CHECK(record(s, {f.release(second[0], t0 + 30s)}) == 1);
    CHECK(detail::text_of(row_of(s, "steps", "a")) == untouched);
    auto stale = claim(s, f.claim_at("alice", t0 + 30s, 10, 60s));
    REQUIRE(stale.size() == 1);
    auto fresh = claim(s, f.claim_at("alice", t0 + 91s, 10, 60s));  // the lease ran out, attempts left
    REQUIRE(fresh.size() == 1);
    CHECK(detail::text_of(row_of(s, "steps", "a")) == untouched);
    CHECK(record(s, {f.complete(stale[0], t0 + 92s, "late")}) == 0);
    CHECK(detail::text_of(row_of(s, "steps", "a")) == untouched);
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

  // ---- query_entities --------------------------------------------------------------------------

  // Rows of two users, saved out of time order; a0, a2 and b0 share a time (then id decides).
  auto put = [&](const char* collection, const char* id, const char* user, timestamp when) {
    entity_change c = f.make_entity_change(collection, id, user);
    c.entity.occurred_at = when;
    commit_ok(s, c);
  };
  auto where = [](std::string collection, std::optional<std::string> user = std::nullopt) {
    entity_query q;
    q.collection = std::move(collection);
    q.user_id = std::move(user);
    return q;
  };
  auto put_rows = [&] {
    put("steps", "a3", "alice", t0 + 5h);
    put("steps", "a1", "alice", t0 + 3h);
    put("steps", "b1", "bob", t0 + 2h);
    put("steps", "a2", "alice", t0 + 1h);
    put("steps", "b0", "bob", t0 + 1h);
    put("steps", "a0", "alice", t0 + 1h);
    put("heart", "h1", "alice", t0);
  };
  // Delivers the create events of the given rows, which marks them synced.
  auto deliver = [&](std::initializer_list<std::string_view> rows) {
    for (const char* user : {"alice", "bob"}) {
      std::vector<outcome> done;
      for (const event& e : claim(s, f.claim_at(user, t0, 100))) {
        for (std::string_view row : rows)
          if (e.entity_id == row) done.push_back(f.complete(e, t0, "srv-" + e.entity_id));
      }
      CHECK(record(s, done) == done.size());
    }
  };

  SECTION("query_entities lists one collection in (occurred_at, id) order, for one user or all") {
    put_rows();
    CHECK(listed(s, where("steps")) == id_list{"a0", "a2", "b0", "b1", "a1", "a3"});
    CHECK(listed(s, where("steps", "alice")) == id_list{"a0", "a2", "a1", "a3"});
    CHECK(listed(s, where("steps", "bob")) == id_list{"b0", "b1"});
    CHECK(listed(s, where("steps", "carol")).empty());
    CHECK(listed(s, where("heart")) == id_list{"h1"});
    CHECK(listed(s, where("nothing")).empty());
    auto rows = s.query_entities(where("steps", "alice"));
    REQUIRE(rows.has_value());
    REQUIRE(rows->size() == 4);
    CHECK(detail::text_of((*rows)[2]) == detail::text_of(row_of(s, "steps", "a1")));  // whole rows
  }

  SECTION("query_entities filters by sync status and by occurred_at in [from, until)") {
    put_rows();
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

    deliver({"a2", "b1"});
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
    put_rows();
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

    deliver({"a0", "a2", "b0"});
    entity_query pending = where("steps", "alice");
    pending.sync = sync_status::pending;
    pending.limit = 1;
    CHECK(listed(s, pending) == id_list{"a1"});
    pending.user_id.reset();
    pending.limit = 2;
    CHECK(listed(s, pending) == id_list{"b1", "a1"});
  }

  SECTION("query_entities follows updates of occurred_at and leaves erased rows out") {
    put_rows();
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

}  // namespace outbox::testing

/// Defines the conformance test case for each factory type given.
#define OUTBOX_STORAGE_CONFORMANCE_TESTS(...)                                                   \
  TEMPLATE_TEST_CASE("storage conformance", "[storage][conformance]", __VA_ARGS__) {            \
    ::outbox::testing::run_storage_conformance<TestType>();                                     \
  }

/// Defines the entity conformance test case for each factory type given; the storages must
/// satisfy `outbox::entity_storage`.
#define OUTBOX_ENTITY_STORAGE_CONFORMANCE_TESTS(...)                                                  \
  TEMPLATE_TEST_CASE("entity storage conformance", "[storage][conformance][entity]", __VA_ARGS__) {    \
    ::outbox::testing::run_entity_storage_conformance<TestType>();                                     \
  }
