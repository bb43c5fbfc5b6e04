// Repository queries: by user, sync status and the entity's own time.
#include <catch2/catch.hpp>

#include "support/entities.hpp"

using namespace outbox_test;
using outbox::sync_status;

TEMPLATE_TEST_CASE("entities are listed by user, sync status and time range", "[repository][queries]",
                   OUTBOX_TEST_ENTITY_STORAGES) {
  repo_fixture<TestType> f;
  for (int h : {5, 1, 3}) REQUIRE(f.steps.save(f.hour(h, h)).has_value());
  REQUIRE(f.steps.save(f.hour(2, 2, "bob")).has_value());

  auto hours = [](const auto& rows) {
    std::vector<int> out;
    for (const auto& r : rows) out.push_back(r.entity.hour);
    return out;
  };
  const auto alice = f.steps.query({.user_id = "alice", .sync = std::nullopt, .from = std::nullopt,
                                    .until = std::nullopt, .limit = 100}).value();
  CHECK(hours(alice) == std::vector<int>{1, 3, 5});  // in their own time order
  const auto window = f.steps.query({.user_id = "alice", .sync = std::nullopt, .from = f.t0 + 2h,
                                     .until = f.t0 + 5h, .limit = 100}).value();
  CHECK(hours(window) == std::vector<int>{3});
  const auto everyone = f.steps.query({}).value();
  CHECK(hours(everyone) == std::vector<int>{1, 2, 3, 5});
  const auto first_two = f.steps.query({.user_id = std::nullopt, .sync = std::nullopt, .from = std::nullopt,
                                        .until = std::nullopt, .limit = 2}).value();
  CHECK(hours(first_two) == std::vector<int>{1, 2});

  f.box.set_user("alice");
  while (f.box.process_once().claimed > 0) {
  }
  const auto synced = f.steps.query({.user_id = std::nullopt, .sync = sync_status::synced, .from = std::nullopt,
                                     .until = std::nullopt, .limit = 100}).value();
  CHECK(hours(synced) == std::vector<int>{1, 3, 5});
  const auto waiting = f.steps.query({.user_id = std::nullopt, .sync = sync_status::pending, .from = std::nullopt,
                                      .until = std::nullopt, .limit = 100}).value();
  CHECK(hours(waiting) == std::vector<int>{2});  // bob is not logged in
  CHECK(f.weights.query({}).value().empty());    // collections are separate
}
