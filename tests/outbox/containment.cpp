// Nothing throws out of processing: transport, callback and storage failures become retry
// decisions and on_error reports, and nothing stored is lost.
#include <catch2/catch.hpp>

#include <functional>
#include <stdexcept>
#include <utility>

#include "support/fixture.hpp"

using namespace outbox_test;
using outbox::delivery_result;
using outbox::errc;
using outbox::status;

namespace {
/// A transport that throws on its first `failures` calls, then delivers.
struct throwing_transport {
  int failures = 1;
  int calls = 0;
  void send(std::span<const outbox::event> batch, std::span<delivery_result> results) {
    if (calls++ < failures) throw std::runtime_error("socket closed");
    for (std::size_t i = 0; i < batch.size(); ++i) results[i] = delivery_result::delivered();
  }
};

/// A transport that reports a failure of its own (as the HTTP transport does when the backend
/// refuses fresh credentials) and answers every event unavailable.
struct reporting_transport {
  std::function<void(const outbox::error&)> report;
  void set_error_reporter(std::function<void(const outbox::error&)> reporter) { report = std::move(reporter); }
  void send(std::span<const outbox::event> batch, std::span<delivery_result> results) {
    report(outbox::error(errc::unauthorized, "token refused"));
    for (std::size_t i = 0; i < batch.size(); ++i) results[i] = delivery_result::unavailable("log in again");
  }
};
static_assert(outbox::error_reporting_transport<reporting_transport>);
static_assert(!outbox::error_reporting_transport<throwing_transport>);

/// A transport that answers only the first event of each batch.
struct forgetful_transport {
  void send(std::span<const outbox::event>, std::span<delivery_result> results) {
    results[0] = delivery_result::delivered();
  }
};
}  // namespace

TEST_CASE("a throwing transport becomes a retry and an error report", "[outbox][containment]") {
  outbox::Outbox<outbox::memory_storage, throwing_transport, outbox::manual_clock> box;
  box.set_user("alice");
  std::vector<std::string> errors;
  box.on_error([&](const outbox::error& e) { errors.push_back(e.what()); });
  const auto id = box.enqueue({.type = "t", .entity_id = "e", .payload = "{}"}).value();
  const auto report = box.process_once();
  CHECK(report.retried == 1);
  REQUIRE(errors.size() == 1);
  CHECK_THAT(errors[0], Catch::Contains("socket closed"));
  const auto e = box.find(id).value().value();
  CHECK(e.status == status::failed);
  CHECK_THAT(e.last_error, Catch::Contains("socket closed"));
  box.clock().advance(30s);
  CHECK(box.process_once().delivered == 1);
}

TEST_CASE("an event the transport gives no answer for is retried, never taken as delivered",
          "[outbox][containment]") {
  outbox::Outbox<outbox::memory_storage, forgetful_transport, outbox::manual_clock> box;
  box.set_user("alice");
  REQUIRE(box.enqueue({.type = "t", .entity_id = "a", .payload = "{}"}).has_value());
  const auto b = box.enqueue({.type = "t", .entity_id = "b", .payload = "{}"}).value();
  const auto report = box.process_once();
  CHECK(report.delivered == 1);
  CHECK(report.retried == 1);
  CHECK(box.find(b).value()->status == status::failed);
}

TEST_CASE("a throwing callback is reported and does not undo or stop the batch", "[outbox][containment]") {
  fixture f;
  f.box.set_user("alice");
  int reports = 0;
  f.box.on_delivered([](const outbox::event&, const delivery_result&) { throw std::logic_error("bug in app"); });
  f.box.on_error([&](const outbox::error& e) {
    ++reports;
    CHECK_THAT(e.what(), Catch::Contains("on_delivered callback threw: bug in app"));
    throw std::runtime_error("the error handler fails too");  // swallowed: nobody left to tell
  });
  const auto a = f.enqueue("a");
  const auto b = f.enqueue("b");
  const auto report = f.box.process_once();
  CHECK(report.delivered == 2);
  CHECK(reports == 2);
  CHECK(f.get(a).status == status::completed);
  CHECK(f.get(b).status == status::completed);
}

TEST_CASE("a storage failure while claiming is reported; nothing is lost", "[outbox][containment]") {
  faulty_fixture f;
  f.box.set_user("alice");
  const auto id = f.enqueue("e1");
  std::vector<outbox::error> errors;
  f.box.on_error([&](const outbox::error& e) { errors.push_back(e); });
  f.box.storage().fail(outbox::testing::storage_op::claim, 1, errc::busy);
  const auto report = f.box.process_once();
  REQUIRE(report.error.has_value());
  CHECK(*report.error == errc::busy);
  REQUIRE(errors.size() == 1);
  CHECK(f.box.process_once().delivered == 1);
  CHECK(f.get(id).status == status::completed);
}

TEST_CASE("a storage failure while recording leads to redelivery after the lease, not loss",
          "[outbox][containment]") {
  outbox::options options;
  options.lease = 1min;
  faulty_fixture f(options);
  f.box.set_user("alice");
  const auto id = f.enqueue("e1");
  f.box.storage().fail(outbox::testing::storage_op::record, 1, errc::io_error);
  const auto report = f.box.process_once();
  REQUIRE(report.error.has_value());
  CHECK(f.get(id).status == status::processing);  // the outcome was not recorded
  f.clock.advance(1min);
  CHECK(f.box.process_once().delivered == 1);
  CHECK(f.backend.accepted_count(id) == 2);  // at-least-once: sent twice, the id makes it idempotent
  CHECK(f.get(id).status == status::completed);
}

TEST_CASE("a wall clock that steps back does not freeze a retry beyond its bound", "[outbox][containment][clock]") {
  fixture f;
  f.box.set_user("alice");
  const auto id = f.enqueue("e1");
  f.backend.add_rule({}, delivery_result::retryable("500"), 1);
  CHECK(f.box.process_once().retried == 1);
  CHECK(f.get(id).retry_after == f.t0 + 30s);
  f.clock.advance(-24h);  // the user set the date back a day
  f.box.process_once();   // notices the step and re-bounds the schedule
  CHECK(f.get(id).retry_after <= f.clock.now() + 1h);
  f.clock.advance(1h);
  CHECK(f.box.process_once().delivered == 1);  // not a day and 30 s later
}

TEST_CASE("a transport's own error reports reach on_error", "[outbox][containment]") {
  outbox::Outbox<outbox::memory_storage, reporting_transport, outbox::manual_clock> box;
  box.set_user("alice");
  std::vector<outbox::error> errors;
  box.on_error([&](const outbox::error& e) { errors.push_back(e); });
  const auto id = box.enqueue({.type = "t", .entity_id = "e", .payload = "{}"}).value();
  CHECK(box.process_once().unavailable == 1);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0] == errc::unauthorized);
  CHECK(box.find(id).value()->attempts == 0);
}
