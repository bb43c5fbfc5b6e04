// Delivery writes back onto the entity, in the transaction that completes the event.
#include <catch2/catch.hpp>

#include "support/entities.hpp"

using namespace outbox_test;
using outbox::delivery_result;
using outbox::sync_status;

TEMPLATE_TEST_CASE("a delivery sets the backend id and marks the entity synced", "[repository][write_back]",
                   OUTBOX_TEST_ENTITY_STORAGES) {
  repo_fixture<TestType> f;
  f.box.set_user("alice");
  const auto saved = f.steps.save(f.hour(9, 412)).value();
  f.backend.add_rule({.id = saved.event}, delivery_result::delivered("srv-42"));
  CHECK(f.box.process_once().delivered == 1);
  const auto entity = f.steps.find(saved.id).value().value();
  CHECK(entity.sync == sync_status::synced);
  CHECK(entity.remote_id == "srv-42");
  CHECK(entity.sync_error.empty());
}

TEMPLATE_TEST_CASE("an entity with a newer change waiting stays pending, but learns its backend id",
                   "[repository][write_back]", OUTBOX_TEST_ENTITY_STORAGES) {
  repo_fixture<TestType> f;
  f.box.set_user("alice");
  REQUIRE(f.weights.save({.id = "w1", .user_id = "alice", .kg = 70}).has_value());
  f.backend.set_on_send([&](std::span<const outbox::event>) {
    // While the create is in flight the user edits the entry.
    REQUIRE(f.weights.save({.id = "w1", .user_id = "alice", .kg = 71}).has_value());
  });
  CHECK(f.box.process_once().delivered == 1);
  f.backend.set_on_send({});
  auto entity = f.weights.find("w1").value().value();
  CHECK(entity.sync == sync_status::pending);
  CHECK(entity.remote_id == "remote-1");
  CHECK(f.box.process_once().delivered == 1);
  entity = f.weights.find("w1").value().value();
  CHECK(entity.sync == sync_status::synced);
  CHECK(entity.entity.kg == 71);
}

TEMPLATE_TEST_CASE("a dead event leaves the entity pending and says why", "[repository][write_back]",
                   OUTBOX_TEST_ENTITY_STORAGES) {
  repo_fixture<TestType> f;
  f.box.set_user("alice");
  const auto saved = f.weights.save({.id = "w1", .user_id = "alice", .kg = -5}).value();
  f.backend.add_rule({.id = saved.event}, delivery_result::permanent("422 weight must be positive"));
  CHECK(f.box.process_once().dead == 1);
  const auto entity = f.weights.find("w1").value().value();
  CHECK(entity.sync == sync_status::pending);
  CHECK(entity.sync_error == "422 weight must be positive");
  CHECK(entity.remote_id.empty());
  const auto stuck = f.weights.query({.user_id = "alice", .sync = sync_status::pending, .from = std::nullopt,
                                      .until = std::nullopt, .limit = 10}).value();
  REQUIRE(stuck.size() == 1);
  CHECK(stuck[0].sync_error == "422 weight must be positive");
}
