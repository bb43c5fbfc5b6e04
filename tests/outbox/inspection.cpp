// Inspecting and repairing: queries, counts and ages, resets, purge.
#include <catch2/catch.hpp>

#include "support/fixture.hpp"

using namespace outbox_test;
using outbox::delivery_result;
using outbox::errc;
using outbox::status;

TEST_CASE("stats count per status and age the oldest pending and due events", "[outbox][inspection]") {
  fixture f;
  f.box.set_user("alice");
  f.enqueue("a");
  f.clock.advance(10s);
  f.enqueue("b");
  f.enqueue("c", "bob");
  f.clock.advance(5s);
  auto all = f.box.stats().value();
  CHECK(all.count(status::pending) == 3);
  CHECK(*all.oldest_pending_age == 15s);
  auto bob = f.box.stats("bob").value();
  CHECK(bob.count(status::pending) == 1);
  CHECK(*bob.oldest_pending_age == 5s);
  f.box.process_once();
  auto after = f.box.stats("alice").value();
  CHECK(after.count(status::completed) == 2);
  CHECK_FALSE(after.oldest_pending_age.has_value());
  CHECK_FALSE(after.oldest_due_age.has_value());
}

TEST_CASE("queries filter by status and user", "[outbox][inspection]") {
  fixture f;
  f.box.set_user("alice");
  f.backend.add_rule({.entity_id = "bad"}, delivery_result::permanent("rejected"));
  f.enqueue("good");
  const auto bad = f.enqueue("bad");
  f.enqueue("later", "bob");
  f.box.process_once();
  auto dead = f.box.query({.status_is = status::dead, .user_id = "alice", .limit = 10, .after_seq = 0}).value();
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].id == bad);
  CHECK(dead[0].last_error == "rejected");
  auto bobs = f.box.query({.status_is = std::nullopt, .user_id = "bob", .limit = 10, .after_seq = 0}).value();
  REQUIRE(bobs.size() == 1);
  CHECK(bobs[0].entity_id == "later");
}

TEST_CASE("an entity's trail and a type's events: queries by entity id and type", "[outbox][inspection]") {
  fixture f;
  f.box.set_user("alice");
  f.backend.add_rule({.entity_id = "bad"}, delivery_result::permanent("rejected"));
  const auto first = f.enqueue("bad");
  f.enqueue("good");
  f.box.process_once();
  const auto second = f.enqueue("bad");
  outbox::event_query trail;
  trail.entity_id = "bad";
  auto events = f.box.query(trail).value();
  REQUIRE(events.size() == 2);
  CHECK(events[0].id == first);
  CHECK(events[0].status == status::dead);
  CHECK(events[1].id == second);
  CHECK(events[1].status == status::pending);
  trail.status_is = status::dead;
  CHECK(f.box.query(trail).value().size() == 1);
  outbox::event_query of_type;
  of_type.type = events[0].type;
  CHECK(f.box.query(of_type).value().size() == 3);
  of_type.type = "no.such.type";
  CHECK(f.box.query(of_type).value().empty());
}

TEST_CASE("stats age the oldest failed and dead events, for an alert on a stuck queue", "[outbox][inspection]") {
  fixture f;
  f.box.set_user("alice");
  f.backend.add_rule({.entity_id = "dead"}, delivery_result::permanent("rejected"));
  f.backend.add_rule({.entity_id = "failing"}, delivery_result::retryable("503"));
  f.enqueue("dead");
  f.clock.advance(10s);
  f.enqueue("failing");
  f.box.process_once();
  f.clock.advance(5s);
  auto stats = f.box.stats().value();
  REQUIRE(stats.oldest_dead_age.has_value());
  CHECK(*stats.oldest_dead_age == 15s);
  REQUIRE(stats.oldest_failed_age.has_value());
  CHECK(*stats.oldest_failed_age == 5s);
}

TEST_CASE("reset_for_retry says why it cannot reset", "[outbox][inspection]") {
  fixture f;
  f.box.set_user("alice");
  const auto pending = f.enqueue("e1");
  auto not_failed = f.box.reset_for_retry(pending);
  REQUIRE_FALSE(not_failed.has_value());
  CHECK(not_failed.error() == errc::invalid_state);
  CHECK_THAT(not_failed.error().message, Catch::Contains("pending"));
  auto missing = f.box.reset_for_retry(outbox::event_id{1, 2});
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error() == errc::not_found);
}

TEST_CASE("bulk resets: a list of ids, or every dead event of a user", "[outbox][inspection]") {
  fixture f;
  f.box.set_user("alice");
  f.backend.add_rule({}, delivery_result::permanent("no"), 3);
  const auto a = f.enqueue("a");
  const auto b = f.enqueue("b");
  const auto c = f.enqueue("c");
  CHECK(f.box.process_once().dead == 3);
  const outbox::event_id two[] = {a, b};
  CHECK(f.box.reset_for_retry(two).value() == 2);
  CHECK(f.get(c).status == status::dead);
  CHECK(f.box.reset_dead("alice").value() == 1);
  CHECK(f.get(c).status == status::pending);
  CHECK(f.box.process_once().delivered == 3);
}

TEST_CASE("purge removes completed events older than the given age", "[outbox][inspection]") {
  fixture f;
  f.box.set_user("alice");
  const auto old_one = f.enqueue("old");
  f.box.process_once();
  f.clock.advance(2h);
  const auto new_one = f.enqueue("new");
  f.box.process_once();
  f.clock.advance(30min);
  CHECK(f.box.purge_completed(1h).value() == 1);
  CHECK_FALSE(f.box.find(old_one).value().has_value());
  CHECK(f.get(new_one).status == status::completed);
}
