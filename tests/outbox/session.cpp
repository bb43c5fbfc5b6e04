// Session gating: processing only while a user is active, and only that user's events.
#include <catch2/catch.hpp>

#include "support/fixture.hpp"

using namespace outbox_test;
using outbox::status;

TEST_CASE("nothing is processed without an active user", "[outbox][session]") {
  fixture f;
  const auto id = f.enqueue("e1", "alice");
  const auto report = f.box.process_once();
  CHECK(report.no_user);
  CHECK(report.claimed == 0);
  CHECK(f.backend.calls() == 0);
  CHECK(f.get(id).status == status::pending);
}

TEST_CASE("only the active user's events reach the transport", "[outbox][session]") {
  fixture f;
  const auto a = f.enqueue("a1", "alice");
  const auto b = f.enqueue("b1", "bob");
  f.box.set_user("bob");
  CHECK(f.box.process_once().delivered == 1);
  CHECK(f.box.process_once().claimed == 0);
  CHECK(f.get(a).status == status::pending);  // alice's event untouched while bob is active
  CHECK(f.get(b).status == status::completed);
  for (const auto& d : f.backend.deliveries()) CHECK(d.user_id == "bob");

  f.box.set_user("alice");
  CHECK(f.box.process_once().delivered == 1);
  CHECK(f.get(a).status == status::completed);
}

TEST_CASE("logout stops delivery and keeps the events for the next login", "[outbox][session]") {
  fixture f;
  f.box.set_user("alice");
  f.enqueue("e1");
  f.box.clear_user();
  CHECK_FALSE(f.box.active_user().has_value());
  CHECK(f.box.process_once().no_user);
  CHECK(f.box.stats().value().count(status::pending) == 1);
  f.box.set_user("alice");
  CHECK(f.box.process_once().delivered == 1);
}

TEST_CASE("a batch claimed just before a user switch is released unsent", "[outbox][session]") {
  faulty_fixture f;
  f.box.set_user("alice");
  const auto id = f.enqueue("e1");
  // The switch lands between claim and send (here from inside the claim, deterministically).
  f.box.storage().after(outbox::testing::storage_op::claim, [&] { f.box.set_user("bob"); });
  const auto report = f.box.process_once();
  CHECK(report.claimed == 1);
  CHECK(report.released == 1);
  CHECK(report.delivered == 0);
  CHECK(f.backend.calls() == 0);  // never handed to the transport under bob's session
  const auto e = f.get(id);
  CHECK(e.status == status::pending);
  CHECK(e.attempts == 0);  // the release gave the attempt back
}
