#pragma once
/// \file
/// Conformance chapters for what a storage tells about its events and their schedule: query,
/// the audit queries by entity and type, purge, next_wake, clamp_schedule and stats. Run by `run_storage_conformance`.

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

/// The audit queries: events by entity id and by type, alone or with the other filters, in
/// append order and in pages; the indexes behind them follow every write.
template <class Storage>
void audit_query_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;
  // Events about entities "x" and "y" of two users and three types, then some delivered, failed
  // and dead: x1 alice created, y1 alice created, x2 bob created, x3 alice updated, y2 alice
  // deleted, x4 alice updated. Each event has its own ordering key, so all are claimable at once.
  auto about = [&](std::string user, std::string entity, std::string type) {
    event e = f.make(std::move(user), std::move(entity), priority::normal, std::move(type));
    e.ordering_key = e.id.to_string();
    return e;
  };
  auto seqs_of = [](const result<std::vector<event>>& page) {
    REQUIRE(page.has_value());
    std::vector<std::uint64_t> seqs;
    for (const auto& e : *page) seqs.push_back(e.seq);
    return seqs;
  };
  auto by_entity = [](std::string id) {
    event_query q;
    q.entity_id = std::move(id);
    return q;
  };
  auto by_type = [](std::string type) {
    event_query q;
    q.type = std::move(type);
    return q;
  };
  using seq_list = std::vector<std::uint64_t>;

  // Appended in each section: the code of a chapter outside its sections runs on every pass.
  std::vector<event> batch;
  std::vector<std::uint64_t> seq;  // seq[i]: batch[i]'s
  auto append_batch = [&] {
    batch = {about("alice", "x", "created"), about("alice", "y", "created"), about("bob", "x", "created"),
             about("alice", "x", "updated"), about("alice", "y", "deleted"), about("alice", "x", "updated")};
    append_all(s, batch);
    for (const auto& e : batch) seq.push_back(e.seq);
  };

  SECTION("query by entity id or by type finds exactly those events, in append order") {
    append_batch();
    CHECK(seqs_of(s.query(by_entity("x"))) == seq_list{seq[0], seq[2], seq[3], seq[5]});
    CHECK(seqs_of(s.query(by_entity("y"))) == seq_list{seq[1], seq[4]});
    CHECK(seqs_of(s.query(by_entity("z"))).empty());
    CHECK(seqs_of(s.query(by_type("created"))) == seq_list{seq[0], seq[1], seq[2]});
    CHECK(seqs_of(s.query(by_type("updated"))) == seq_list{seq[3], seq[5]});
    CHECK(seqs_of(s.query(by_type("created."))).empty());  // the whole type, not a prefix
    CHECK(seqs_of(s.query(by_entity(""))).empty());
    auto x = s.query(by_entity("x"));
    for (const auto& e : *x) {
      INFO(text_of(e));
      CHECK(text_of(e) == text_of(fetch(s, e.id)));  // whole events, as find gives them
    }
  }

  SECTION("query by entity id or type combines with user, type, status, limit and after_seq") {
    append_batch();
    auto claimed = claim(s, f.claim_at("alice", t0));
    REQUIRE(claimed.size() == 5);
    std::vector<outcome> outcomes;
    for (const auto& e : claimed) {
      if (e.id == batch[0].id || e.id == batch[1].id) outcomes.push_back(f.complete(e, t0));
      else if (e.id == batch[3].id) outcomes.push_back(f.fail(e, t0, t0 + 1min));
      else if (e.id == batch[4].id) outcomes.push_back(f.kill(e, t0));
    }
    CHECK(record(s, outcomes) == 4);  // x4 stays in flight

    event_query q = by_entity("x");
    q.user_id = "alice";
    CHECK(seqs_of(s.query(q)) == seq_list{seq[0], seq[3], seq[5]});
    q.user_id = "bob";
    CHECK(seqs_of(s.query(q)) == seq_list{seq[2]});
    q.user_id = "carol";
    CHECK(seqs_of(s.query(q)).empty());

    q = by_entity("x");
    q.status_is = status::completed;
    CHECK(seqs_of(s.query(q)) == seq_list{seq[0]});
    q.status_is = status::failed;
    CHECK(seqs_of(s.query(q)) == seq_list{seq[3]});
    q.status_is = status::processing;
    CHECK(seqs_of(s.query(q)) == seq_list{seq[5]});
    q.status_is = status::pending;
    CHECK(seqs_of(s.query(q)) == seq_list{seq[2]});
    q.user_id = "alice";
    CHECK(seqs_of(s.query(q)).empty());

    q = by_entity("x");
    q.type = "updated";
    CHECK(seqs_of(s.query(q)) == seq_list{seq[3], seq[5]});
    q.type = "deleted";
    CHECK(seqs_of(s.query(q)).empty());

    q = by_type("deleted");
    q.status_is = status::dead;
    CHECK(seqs_of(s.query(q)) == seq_list{seq[4]});
    q = by_type("created");
    q.status_is = status::completed;
    q.user_id = "alice";
    CHECK(seqs_of(s.query(q)) == seq_list{seq[0], seq[1]});

    // Pages: `limit` events matching, then on from the last one's seq.
    q = by_entity("x");
    q.limit = 2;
    CHECK(seqs_of(s.query(q)) == seq_list{seq[0], seq[2]});
    q.after_seq = seq[2];
    CHECK(seqs_of(s.query(q)) == seq_list{seq[3], seq[5]});
    q.after_seq = seq[5];
    CHECK(seqs_of(s.query(q)).empty());
    q = by_type("created");
    q.user_id = "alice";
    q.limit = 1;
    CHECK(seqs_of(s.query(q)) == seq_list{seq[0]});
    q.after_seq = seq[0];
    CHECK(seqs_of(s.query(q)) == seq_list{seq[1]});
    q.limit = 0;
    CHECK(seqs_of(s.query(q)).empty());
  }

  SECTION("purged events leave the entity and type queries; later ones join them") {
    append_batch();
    auto claimed = claim(s, f.claim_at("alice", t0));
    std::vector<outcome> outcomes;
    for (const auto& e : claimed) outcomes.push_back(f.complete(e, e.id == batch[0].id ? t0 : t0 + 1h));
    CHECK(record(s, outcomes) == claimed.size());
    CHECK(s.purge_completed(t0 + 1min).value() == 1);  // x1
    CHECK(seqs_of(s.query(by_entity("x"))) == seq_list{seq[2], seq[3], seq[5]});
    CHECK(seqs_of(s.query(by_type("created"))) == seq_list{seq[1], seq[2]});
    std::vector<event> more = {about("bob", "x", "created")};
    append_all(s, more);
    CHECK(seqs_of(s.query(by_entity("x"))) == seq_list{seq[2], seq[3], seq[5], more[0].seq});
    CHECK(seqs_of(s.query(by_type("created"))) == seq_list{seq[1], seq[2], more[0].seq});
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

  SECTION("stats tell the age of the oldest failed and the oldest dead event") {
    std::vector<event> batch = {f.make("alice", "a"), f.make("alice", "b"), f.make("alice", "c"),
                                f.make("bob", "d"), f.make("bob", "e")};
    for (std::size_t i = 0; i < batch.size(); ++i) batch[i].created_at = t0 + std::chrono::seconds(10 * static_cast<int>(i));
    append_all(s, batch);
    auto none = s.stats(std::nullopt, t0 + 1min);
    REQUIRE(none.has_value());
    CHECK_FALSE(none->oldest_failed_age.has_value());
    CHECK_FALSE(none->oldest_dead_age.has_value());

    auto alices = claim(s, f.claim_at("alice", t0 + 1min));
    auto bobs = claim(s, f.claim_at("bob", t0 + 1min));
    REQUIRE(alices.size() == 3);
    REQUIRE(bobs.size() == 2);
    // a: completed; b: failed; c: dead; d: dead; e: failed.
    CHECK(record(s, {f.complete(alices[0], t0 + 1min), f.fail(alices[1], t0 + 1min, t0 + 1h),
                     f.kill(alices[2], t0 + 1min), f.kill(bobs[0], t0 + 1min),
                     f.fail(bobs[1], t0 + 1min, t0 + 1h)}) == 5);
    const timestamp now = t0 + 2min;
    auto all = s.stats(std::nullopt, now);
    REQUIRE(all.has_value());
    CHECK(all->oldest_failed_age == std::optional<duration>(110s));  // b, created at t0 + 10s
    CHECK(all->oldest_dead_age == std::optional<duration>(100s));    // c, created at t0 + 20s
    auto bob = s.stats(std::string_view("bob"), now);
    CHECK(bob->oldest_failed_age == std::optional<duration>(80s));   // e
    CHECK(bob->oldest_dead_age == std::optional<duration>(90s));     // d
    CHECK_FALSE(s.stats(std::string_view("carol"), now)->oldest_dead_age.has_value());

    // A reset event is no longer dead or failed; the next oldest takes its place.
    const std::array<event_id, 2> revived = {batch[2].id, batch[1].id};
    CHECK(s.reset(std::span<const event_id>(revived), now).value() == 2);
    all = s.stats(std::nullopt, now);
    CHECK(all->oldest_failed_age == std::optional<duration>(80s));  // e
    CHECK(all->oldest_dead_age == std::optional<duration>(90s));    // d
    CHECK(s.reset_dead(std::nullopt, now).value() == 1);
    CHECK_FALSE(s.stats(std::nullopt, now)->oldest_dead_age.has_value());
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

/// `stats` and the audit queries checked against the events themselves after every step of a
/// random walk of writes.
template <class Storage>
void stats_walk_chapter(Storage& s, storage_fixture& f) {
  const timestamp t0 = f.t0;

  SECTION("stats and audit queries agree with the events through every kind of write, in a random walk of them") {
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
            batch.back().type = "t" + std::to_string(pick(3));
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
      check_field_queries(s, "k" + std::to_string(pick(5)), "t" + std::to_string(pick(3)));
    }
  }
}

}  // namespace outbox::testing::conformance
