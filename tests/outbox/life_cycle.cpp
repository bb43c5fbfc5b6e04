// The event life cycle driven through process_once: delivered, retried on the reference
// schedule, dead, reset; offline answers, permanent rejections, server hints, expired leases.
#include <catch2/catch.hpp>

#include <outbox/testing/storage_conformance.hpp>

#include "support/fixture.hpp"

using namespace outbox_test;
using outbox::delivery_result;
using outbox::status;

TEST_CASE("a delivered event is completed with the backend's id", "[outbox][life_cycle]") {
  fixture f;
  f.box.set_user("alice");
  std::vector<outbox::event> seen;
  f.box.on_delivered([&](const outbox::event& e, const delivery_result&) { seen.push_back(e); });
  const auto id = f.enqueue("e1");
  f.clock.advance(2s);
  const auto report = f.box.process_once();
  CHECK(report.claimed == 1);
  CHECK(report.delivered == 1);
  const auto e = f.get(id);
  CHECK(e.status == status::completed);
  CHECK(e.remote_id == "remote-1");
  CHECK(e.completed_at == f.t0 + 2s);
  CHECK(e.attempts == 1);
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].id == id);
  CHECK(seen[0].status == status::completed);
  CHECK(f.backend.accepted_count(id) == 1);
}

TEST_CASE("the reference schedule: retries after 30, 60, 120, 240 s; dead at the 5th failure",
          "[outbox][life_cycle][backoff]") {
  fixture f;
  f.box.set_user("alice");
  f.backend.add_rule({}, delivery_result::retryable("503 busy"));
  int dead_calls = 0;
  std::vector<outbox::timestamp> retry_times;
  f.box.on_failed([&](const outbox::event& e, const delivery_result&) { retry_times.push_back(e.retry_after); });
  f.box.on_dead([&](const outbox::event& e, const delivery_result& r) {
    ++dead_calls;
    CHECK(e.status == status::dead);
    CHECK(r.error == "503 busy");
  });
  const auto id = f.enqueue("e1");

  const std::vector<std::chrono::seconds> expected = {30s, 60s, 120s, 240s};
  for (std::size_t attempt = 1; attempt <= 4; ++attempt) {
    const auto before = f.clock.now();
    CHECK(f.box.process_once().retried == 1);
    auto e = f.get(id);
    CHECK(e.status == status::failed);
    CHECK(e.attempts == static_cast<int>(attempt));
    CHECK(e.retry_after - before == expected[attempt - 1]);
    CHECK(e.last_error == "503 busy");
    // One tick early nothing is claimed; on time the event is tried again.
    f.clock.set(e.retry_after - 1ms);
    CHECK(f.box.process_once().claimed == 0);
    f.clock.set(e.retry_after);
  }
  CHECK(f.box.process_once().dead == 1);
  const auto e = f.get(id);
  CHECK(e.status == status::dead);
  CHECK(e.attempts == 5);
  CHECK(dead_calls == 1);
  CHECK(retry_times.size() == 4);
  CHECK(f.clock.now() - f.t0 == 450s);  // 30 + 60 + 120 + 240
  std::vector<int> attempts;
  for (const auto& d : f.backend.deliveries()) attempts.push_back(d.attempt);
  CHECK(attempts == std::vector<int>{1, 2, 3, 4, 5});
  f.clock.advance(24h);
  CHECK(f.box.process_once().claimed == 0);  // dead stays dead
}

TEST_CASE("reset_for_retry brings a dead event back with its attempts cleared", "[outbox][life_cycle]") {
  fixture f;
  f.box.set_user("alice");
  f.backend.add_rule({}, delivery_result::permanent("400 bad"), 1);
  const auto id = f.enqueue("e1");
  CHECK(f.box.process_once().dead == 1);
  REQUIRE(f.box.reset_for_retry(id).has_value());
  auto e = f.get(id);
  CHECK(e.status == status::pending);
  CHECK(e.attempts == 0);
  CHECK(e.last_error == "400 bad");  // the history stays for the audit
  CHECK(f.box.process_once().delivered == 1);
  CHECK(f.get(id).attempts == 1);
}

TEST_CASE("a permanent rejection goes straight to dead", "[outbox][life_cycle]") {
  fixture f;
  f.box.set_user("alice");
  f.backend.add_rule({.type = "test.saved"}, delivery_result::permanent("422 invalid"));
  const auto id = f.enqueue("e1");
  const auto report = f.box.process_once();
  CHECK(report.dead == 1);
  CHECK(report.retried == 0);
  const auto e = f.get(id);
  CHECK(e.status == status::dead);
  CHECK(e.attempts == 1);
  CHECK(e.last_error == "422 invalid");
}

TEST_CASE("offline answers consume no attempt", "[outbox][life_cycle]") {
  fixture f;
  f.box.set_user("alice");
  const auto id = f.enqueue("e1");
  f.backend.set_offline(true);
  for (int i = 0; i < 7; ++i) {
    const auto report = f.box.process_once();
    CHECK(report.unavailable == 1);
    const auto e = f.get(id);
    CHECK(e.status == status::pending);
    CHECK(e.attempts == 0);
  }
  f.backend.set_offline(false);
  CHECK(f.box.process_once().delivered == 1);
  const auto e = f.get(id);
  CHECK(e.attempts == 1);
  CHECK(e.status == status::completed);
}

TEST_CASE("a server's retry-after hint wins over the backoff, bounded by its cap", "[outbox][life_cycle][backoff]") {
  fixture f;
  f.box.set_user("alice");
  const auto soon = f.enqueue("soon");
  const auto late = f.enqueue("late");
  f.backend.add_rule({.entity_id = "soon"}, delivery_result::retryable("429", 5min), 1);
  f.backend.add_rule({.entity_id = "late"}, delivery_result::retryable("429", 3h), 1);
  CHECK(f.box.process_once().retried == 2);
  CHECK(f.get(soon).retry_after == f.t0 + 5min);
  CHECK(f.get(late).retry_after == f.t0 + 1h);  // the exponential backoff's cap
}

TEST_CASE("an exclusive outbox releases claims a dead run left behind at its first cycle", "[outbox][life_cycle][lease]") {
  fixture f;  // exclusive by default
  const auto id = f.enqueue("e1", "alice");
  std::vector<outbox::event> orphaned;  // claimed by the previous run of the process, which died
  REQUIRE(f.box.storage().claim({"alice", f.clock.now(), f.clock.now() + 2min, 10}, orphaned).value() == 1);
  f.box.set_user("alice");
  CHECK(f.box.process_once().delivered == 1);  // at once, not two minutes later
  CHECK(f.get(id).attempts == 2);              // the lost attempt still counts
}

TEST_CASE("an expired lease returns the event; the dead claimer's late result changes nothing",
          "[outbox][life_cycle][lease]") {
  outbox::options options;
  options.lease = 2min;
  options.exclusive = false;  // another processor shares the storage, and it is the one that dies
  fixture f(options);
  f.box.set_user("alice");
  const auto id = f.enqueue("e1");

  // The other processor claims the event and "dies" before recording anything.
  std::vector<outbox::event> lost;
  REQUIRE(f.box.storage().claim({"alice", f.clock.now(), f.clock.now() + 2min, 10}, lost).value() == 1);
  CHECK(f.box.process_once().claimed == 0);  // still leased
  f.clock.advance(2min);
  CHECK(f.box.process_once().delivered == 1);  // the lease ran out: delivered again
  auto e = f.get(id);
  CHECK(e.status == status::completed);
  CHECK(e.attempts == 2);

  // The dead claimer's result arrives late and must not overwrite the newer state.
  std::vector<outbox::outcome> late = {outbox::testing::storage_fixture::kill(lost[0], f.clock.now(), "late")};
  CHECK(f.box.storage().record(std::span<outbox::outcome>(late)).value() == 0);
  e = f.get(id);
  CHECK(e.status == status::completed);
  CHECK(e.last_error != "late");
}
