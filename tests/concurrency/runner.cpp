// The background runner: when it wakes, that it stops cleanly, and that it survives failures.
// Time is the manual clock's: a test moves it and the runner reacts. Real-time waits below only
// bound how long a failing test hangs; they never decide an outcome.
#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <outbox/testing/storage_conformance.hpp>

#include "support/fixture.hpp"

using namespace outbox_test;
using outbox::delivery_result;
using outbox::status;

namespace {
/// Holds every send until released, so a test can keep a batch in flight.
class gate {
 public:
  void arrive() {
    std::unique_lock lock(mutex_);
    ++arrived_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
  }
  bool wait_arrived(int n) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, 20s, [&] { return arrived_ >= n; });
  }
  void open() {
    std::lock_guard lock(mutex_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int arrived_ = 0;
  bool open_ = false;
};
}  // namespace

TEST_CASE("the runner delivers a new event without waiting for the poll interval", "[runner]") {
  fixture f;  // poll interval 30 s of manual time, which never passes here
  f.box.set_user("alice");
  f.box.start();
  REQUIRE(f.box.run_cycle_and_wait());  // the runner is idle, waiting
  const auto id = f.enqueue("e1");
  REQUIRE(eventually([&] { return f.backend.accepted_count(id) == 1; }));
  CHECK(f.clock.now() == f.t0);
  f.box.stop();
  CHECK(f.get(id).status == status::completed);
}

TEST_CASE("the runner drains a key's later events without waiting for a poll", "[runner]") {
  fixture f;  // batch of 10, but one key: each cycle can claim only that key's head
  f.box.set_user("alice");
  for (int i = 0; i < 5; ++i) f.enqueue("same-entity");
  f.box.start();
  REQUIRE(eventually([&] { return f.backend.accepted_count() == 5; }));
  CHECK(f.clock.now() == f.t0);  // no poll interval had to pass
}

TEST_CASE("the runner wakes at the retry time under the manual clock", "[runner]") {
  fixture f;
  f.box.set_user("alice");
  f.backend.add_rule({}, delivery_result::retryable("503"), 1);
  std::atomic<int> delivered{0};
  f.box.on_delivered([&](const outbox::event&, const delivery_result&) { ++delivered; });
  f.box.start();
  const auto id = f.enqueue("e1");
  REQUIRE(eventually([&] { return f.get(id).status == status::failed; }));
  CHECK(f.get(id).retry_after == f.t0 + 30s);

  f.clock.advance(29s);
  REQUIRE(f.box.run_cycle_and_wait());
  CHECK(delivered == 0);  // not before its time
  f.clock.advance(1s);    // the clock's change alone wakes the runner
  REQUIRE(eventually([&] { return delivered == 1; }));
  CHECK(f.get(id).attempts == 2);
}

TEST_CASE("the runner polls for events it was not told about", "[runner]") {
  outbox::options options;
  options.poll_interval = 10s;
  fixture f(options);
  f.box.set_user("alice");
  f.box.start();
  REQUIRE(f.box.run_cycle_and_wait());  // idle until t0 + 10 s
  // Another writer (say, another process on the same database) appends without waking us.
  outbox::testing::storage_fixture made;
  std::vector<outbox::event> external = {made.make("alice", "external")};
  REQUIRE(f.box.storage().append(std::span<outbox::event>(external)).has_value());
  f.clock.advance(10s);
  REQUIRE(eventually([&] { return f.backend.accepted_count() == 1; }));
}

TEST_CASE("stop waits for the batch in flight and records its outcome", "[runner]") {
  fixture f;
  f.box.set_user("alice");
  gate g;
  f.backend.set_on_send([&](std::span<const outbox::event>) { g.arrive(); });
  f.box.start();
  const auto id = f.enqueue("e1");
  REQUIRE(g.wait_arrived(1));
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    f.box.stop();
    stopped = true;
  });
  g.open();
  stopper.join();
  CHECK(stopped);
  CHECK_FALSE(f.box.running());
  CHECK(f.get(id).status == status::completed);  // the outcome was recorded before stop returned
}

TEST_CASE("the runner survives a throwing transport and callbacks", "[runner]") {
  fixture f;
  f.box.set_user("alice");
  std::atomic<int> errors{0};
  f.box.on_error([&](const outbox::error&) { ++errors; });
  f.box.on_failed([](const outbox::event&, const delivery_result&) { throw std::runtime_error("callback bug"); });
  std::atomic<int> sends{0};
  f.backend.set_on_send([&](std::span<const outbox::event>) {
    if (sends++ == 0) throw std::runtime_error("connection reset");
  });
  f.box.start();
  const auto id = f.enqueue("e1");
  REQUIRE(eventually([&] { return f.get(id).status == status::failed; }));
  // The outcome is recorded before the callbacks run, so the callback's error may come just after.
  CHECK(eventually([&] { return errors >= 2; }));  // the transport's exception and the callback's
  f.clock.advance(30s);
  REQUIRE(eventually([&] { return f.get(id).status == status::completed; }));
  CHECK(f.box.running());
}

TEST_CASE("while offline the runner backs off instead of resending at once", "[runner]") {
  fixture f;
  f.box.set_user("alice");
  f.backend.set_offline(true);
  f.box.start();
  f.enqueue("e1");
  REQUIRE(eventually([&] { return f.backend.calls() >= 1; }));
  const auto calls = f.backend.calls();
  f.enqueue("e2");  // a new event does not wake an offline runner into another failed send
  f.enqueue("e3");
  REQUIRE(f.box.run_cycle_and_wait());  // a forced cycle does send once
  CHECK(f.backend.calls() == calls + 1);
  f.backend.set_offline(false);
  f.clock.advance(30s);  // the offline pause is over
  REQUIRE(eventually([&] { return f.backend.accepted_count() == 3; }));
  for (const auto& d : f.backend.accepted()) CHECK(d.attempt == 1);  // offline used no attempt
}

TEST_CASE("start and stop are idempotent and restartable", "[runner]") {
  fixture f;
  f.box.set_user("alice");
  f.box.stop();
  f.box.start();
  f.box.start();
  CHECK(f.box.running());
  f.box.stop();
  f.box.stop();
  CHECK_FALSE(f.box.running());
  CHECK_FALSE(f.box.run_cycle_and_wait(10ms));
  const auto id = f.enqueue("e1");
  f.box.start();
  REQUIRE(eventually([&] { return f.backend.accepted_count(id) == 1; }));
}

TEST_CASE("the runner works on the system clock too", "[runner]") {
  outbox::mock_transport backend;
  outbox::memory_outbox<outbox::mock_transport> box(outbox::memory_storage(), backend);
  box.set_user("alice");
  box.start();
  const auto id = box.enqueue({.type = "t", .entity_id = "e", .payload = "{}"}).value();
  REQUIRE(eventually([&] { return backend.accepted_count(id) == 1; }));
}
