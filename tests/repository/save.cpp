// Repository::save: the entity and its event in one atomic write; natural-key dedup.
#include <catch2/catch.hpp>

#include "support/entities.hpp"

using namespace outbox_test;
using outbox::change_kind;
using outbox::errc;
using outbox::status;
using outbox::sync_status;

TEMPLATE_TEST_CASE("a save stores the entity and its created event together", "[repository][save]",
                   OUTBOX_TEST_ENTITY_STORAGES) {
  repo_fixture<TestType> f;
  auto saved = f.steps.save(f.hour(9, 412));
  REQUIRE(saved.has_value());
  CHECK(saved->kind == change_kind::created);
  CHECK_FALSE(saved->id.empty());  // an empty id was assigned

  const auto entity = f.steps.find(saved->id).value().value();
  CHECK(entity.entity.count == 412);
  CHECK(entity.entity.id == saved->id);
  CHECK(entity.sync == sync_status::pending);
  CHECK(entity.remote_id.empty());
  CHECK(entity.last_event == saved->event);

  const auto e = f.get(saved->event);
  CHECK(e.type == "steps.created");
  CHECK(e.entity_type == "steps");
  CHECK(e.entity_id == saved->id);
  CHECK(e.ordering_key == "steps/" + saved->id);
  CHECK(e.user_id == "alice");
  CHECK(e.status == status::pending);
  CHECK(outbox_test::hourly_steps::from_payload(e.payload).count == 412);
}

TEMPLATE_TEST_CASE("saving a stored entity again is an update", "[repository][save]", OUTBOX_TEST_ENTITY_STORAGES) {
  repo_fixture<TestType> f;
  f.box.set_user("alice");
  auto first = f.weights.save({.id = "w1", .user_id = "alice", .kg = 71.4}).value();
  CHECK(f.box.process_once().delivered == 1);  // the create is delivered: no coalescing now
  auto second = f.weights.save({.id = "w1", .user_id = "alice", .kg = 71.0}).value();
  CHECK(second.kind == change_kind::updated);
  CHECK(second.event != first.event);
  CHECK(f.get(second.event).type == "weight.updated");
  CHECK(f.weights.find("w1").value()->entity.kg == 71.0);
}

TEMPLATE_TEST_CASE("natural-key dedup: 24 hourly saves repeated twice leave 24 entities", "[repository][save]",
                   OUTBOX_TEST_ENTITY_STORAGES) {
  repo_fixture<TestType> f;
  for (int round = 0; round < 2; ++round) {
    for (int h = 0; h < 24; ++h) REQUIRE(f.steps.save(f.hour(h, 100 * round + h)).has_value());
  }
  const auto all = f.steps.query({.user_id = "alice", .sync = std::nullopt, .from = std::nullopt,
                                  .until = std::nullopt, .limit = 1000}).value();
  REQUIRE(all.size() == 24);
  for (int h = 0; h < 24; ++h) CHECK(all[h].entity.count == 100 + h);  // the second round's values
  const auto ten = f.steps.find_by_natural_key("alice", "2026-11-21T10").value().value();
  CHECK(ten.entity.count == 110);
  // Another user's same hour is another entity.
  REQUIRE(f.steps.save(f.hour(10, 5, "bob")).has_value());
  CHECK(f.steps.find_by_natural_key("bob", "2026-11-21T10").value()->entity.count == 5);
  CHECK(f.steps.find_by_natural_key("alice", "2026-11-21T10").value()->entity.count == 110);
}

TEMPLATE_TEST_CASE("a save adopts the id of the entity its natural key names", "[repository][save]",
                   OUTBOX_TEST_ENTITY_STORAGES) {
  repo_fixture<TestType> f;
  const auto first = f.steps.save(f.hour(7, 10)).value();
  auto again = f.hour(7, 20);
  again.id = "some-other-id";
  const auto second = f.steps.save(again).value();
  CHECK(second.id == first.id);
  CHECK_FALSE(f.steps.find("some-other-id").value().has_value());
}

TEST_CASE("a failed write leaves neither the entity nor its event, and keeps what was stored",
          "[repository][save][atomicity]") {
  repo_fixture<outbox::testing::faulty_storage<outbox::memory_storage>> f;
  const auto kept = f.steps.save(f.hour(8, 1)).value();
  f.box.storage().fail(outbox::testing::storage_op::commit, 1, errc::disk_full);
  auto refused = f.steps.save(f.hour(9, 2));
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error() == errc::disk_full);
  CHECK_FALSE(f.steps.find_by_natural_key("alice", "2026-11-21T9").value().has_value());
  CHECK(f.events().size() == 1);  // only the first save's event
  CHECK(f.steps.find(kept.id).value()->entity.count == 1);
  CHECK(f.get(kept.event).status == status::pending);
  REQUIRE(f.steps.save(f.hour(9, 2)).has_value());  // the next write goes through
  CHECK(f.events().size() == 2);
}

TEMPLATE_TEST_CASE("a save without a user or over the payload limit is refused", "[repository][save]",
                   OUTBOX_TEST_ENTITY_STORAGES) {
  repo_fixture<TestType> f;
  auto no_user = f.weights.save({.id = "w", .user_id = "", .kg = 1});
  REQUIRE_FALSE(no_user.has_value());
  CHECK(no_user.error() == errc::invalid_argument);

  outbox::Repository<weight_entry, TestType, outbox::coalesce_unsent, outbox::manual_clock> small(
      f.box, outbox::repository_options{.max_attempts = 5, .max_payload_bytes = 8, .max_conflict_retries = 4});
  auto too_big = small.save({.id = "w", .user_id = "alice", .kg = 71.4});
  REQUIRE_FALSE(too_big.has_value());
  CHECK(too_big.error() == errc::payload_too_large);
  CHECK(f.events().empty());
}

TEMPLATE_TEST_CASE("a save wakes the runner of the outbox it shares", "[repository][save]", OUTBOX_TEST_ENTITY_STORAGES) {
  repo_fixture<TestType> f;
  f.box.set_user("alice");
  f.box.start();
  REQUIRE(f.box.run_cycle_and_wait());
  const auto saved = f.weights.save({.id = "w1", .user_id = "alice", .kg = 70}).value();
  REQUIRE(eventually([&] { return f.backend.accepted_count(saved.event) == 1; }));
  CHECK(f.clock.now() == f.t0);  // no poll interval passed
}
