#pragma once
/// \file
/// Conformance chapters for what a storage tells about its events and their schedule: query,
/// purge, next_wake, clamp_schedule and stats. Run by `run_storage_conformance`.

#include <catch2/catch.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <outbox/testing/conformance/fixture.hpp>

namespace outbox::testing::conformance {

/// `query` pages in append order; `purge_completed` removes only old completed events.
template <class Storage>
void query_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;

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
}

/// `next_wake` and `clamp_schedule`: the times a processor waits for, and their limits.
template <class Storage>
void schedule_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;

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
}

/// `stats`: counts per status and the ages of the oldest pending and due events.
template <class Storage>
void stats_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;

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
}

/// `stats` checked against the events themselves after every step of a random walk of writes.
template <class Storage>
void stats_walk_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;

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
      check_stats(s, {"alice", "bob", "carol"}, now);
    }
  }
}

}  // namespace outbox::testing::conformance
