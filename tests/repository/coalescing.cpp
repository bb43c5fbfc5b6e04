// Coalescing: unsent changes merge; in-flight changes queue behind; deletes of never-sent
// creates vanish.
#include <catch2/catch.hpp>

#include "support/entities.hpp"

using namespace outbox_test;
using outbox::coalesce_decision;
using outbox::status;

TEMPLATE_TEST_CASE("10 rapid edits before the processor runs deliver one event with the last state",
                   "[repository][coalescing]", OUTBOX_TEST_ENTITY_STORAGES) {
  repo_fixture<TestType> f;
  f.box.set_user("alice");
  outbox::event_id first;
  for (int i = 1; i <= 10; ++i) {
    const auto saved = f.weights.save({.id = "w1", .user_id = "alice", .kg = 70.0 + i}).value();
    if (i == 1) first = saved.event;
    CHECK(saved.event == first);  // the same unsent event, rewritten
    if (i > 1) CHECK(saved.event_action == coalesce_decision::action::replace);
  }
  CHECK(f.events().size() == 1);
  CHECK(f.box.process_once().delivered == 1);
  const auto accepted = f.backend.accepted();
  REQUIRE(accepted.size() == 1);
  CHECK(accepted[0].type == "weight.created");  // still a create: the backend never saw the entity
  CHECK(weight_entry::from_payload(accepted[0].payload).kg == 80.0);
}

TEMPLATE_TEST_CASE("edits during an in-flight delivery are delivered in order after it", "[repository][coalescing]",
                   OUTBOX_TEST_ENTITY_STORAGES) {
  repo_fixture<TestType> f(outbox::options{.exclusive = false});  // the claim below is a live processor's
  f.box.set_user("alice");
  REQUIRE(f.weights.save({.id = "w1", .user_id = "alice", .kg = 70}).has_value());
  // The create is claimed and in flight...
  std::vector<outbox::event> in_flight;
  REQUIRE(f.box.storage().claim({"alice", f.clock.now(), f.clock.now() + 1min, 10}, in_flight).value() == 1);
  // ...while the user edits three times: one new event, queued behind, carrying the last edit.
  for (double kg : {71.0, 72.0, 73.0}) REQUIRE(f.weights.save({.id = "w1", .user_id = "alice", .kg = kg}).has_value());
  REQUIRE(f.events().size() == 2);
  CHECK(f.box.process_once().claimed == 0);  // the update waits for the create
  std::vector<outbox::outcome> done = {{.id = in_flight[0].id, .lease = in_flight[0].lease,
                                        .to = status::completed, .attempts = 1, .at = f.clock.now(),
                                        .retry_after = {}, .error = {}, .remote_id = "srv-1", .applied = false}};
  REQUIRE(f.box.storage().record(std::span<outbox::outcome>(done)).value() == 1);
  CHECK(f.box.process_once().delivered == 1);
  const auto accepted = f.backend.accepted();
  REQUIRE(accepted.size() == 1);
  CHECK(accepted[0].type == "weight.updated");
  CHECK(weight_entry::from_payload(accepted[0].payload).kg == 73.0);
}

TEMPLATE_TEST_CASE("deleting an entity whose create was never sent removes both", "[repository][coalescing]",
                   OUTBOX_TEST_ENTITY_STORAGES) {
  repo_fixture<TestType> f;
  f.box.set_user("alice");
  REQUIRE(f.weights.save({.id = "w1", .user_id = "alice", .kg = 70}).has_value());
  const auto removed = f.weights.remove("w1").value();
  REQUIRE(removed.has_value());
  CHECK(removed->event_action == coalesce_decision::action::drop);
  CHECK_FALSE(f.weights.find("w1").value().has_value());
  CHECK(f.events().empty());
  CHECK(f.box.process_once().claimed == 0);
  CHECK(f.backend.calls() == 0);
}

TEMPLATE_TEST_CASE("deleting a delivered entity sends a delete; of an unsent update, the delete replaces it",
                   "[repository][coalescing]", OUTBOX_TEST_ENTITY_STORAGES) {
  repo_fixture<TestType> f;
  f.box.set_user("alice");
  REQUIRE(f.weights.save({.id = "w1", .user_id = "alice", .kg = 70}).has_value());
  REQUIRE(f.box.process_once().delivered == 1);
  REQUIRE(f.weights.save({.id = "w1", .user_id = "alice", .kg = 69}).has_value());  // unsent update
  const auto removed = f.weights.remove("w1").value().value();
  CHECK(removed.event_action == coalesce_decision::action::replace);
  CHECK(f.get(removed.event).type == "weight.deleted");
  CHECK(f.events(status::pending).size() == 1);
  CHECK(f.box.process_once().delivered == 1);
  CHECK(f.backend.accepted().back().type == "weight.deleted");
  CHECK_FALSE(f.weights.remove("w1").value().has_value());  // already gone
}

TEMPLATE_TEST_CASE("never_coalesce sends every change", "[repository][coalescing]", OUTBOX_TEST_ENTITY_STORAGES) {
  repo_fixture<TestType> f;
  f.box.set_user("alice");
  outbox::Repository<weight_entry, TestType, outbox::never_coalesce, outbox::manual_clock> all(f.box);
  for (double kg : {70.0, 71.0, 72.0}) REQUIRE(all.save({.id = "w1", .user_id = "alice", .kg = kg}).has_value());
  REQUIRE(all.remove("w1").value().has_value());
  while (f.box.process_once().claimed > 0) {
  }
  std::vector<std::string> types;
  for (const auto& d : f.backend.accepted()) types.push_back(d.type);
  CHECK(types == std::vector<std::string>{"weight.created", "weight.updated", "weight.updated", "weight.deleted"});
}
