// Many producers and the runner at once (run under ThreadSanitizer by the test command).
#include <catch2/catch.hpp>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "support/fixture.hpp"

using namespace outbox_test;
using outbox::status;

TEST_CASE("4 producers x 10k events with the runner: every event delivered once", "[concurrency]") {
  outbox::options options;
  options.batch_size = 100;
  fixture f(options);
  f.box.set_user("alice");
  f.box.start();

  constexpr int producers = 4;
  constexpr int per_producer = 10'000;
  std::vector<std::thread> threads;
  std::atomic<int> refused{0};  // Catch2 assertions are not thread-safe: count, check after join
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < per_producer; ++i) {
        // A few entities per producer, so per-key lines interleave with the runner's claims.
        auto id = f.box.enqueue({.type = "sample.saved",
                                 .entity_id = "p" + std::to_string(p) + "-e" + std::to_string(i % 50),
                                 .payload = std::to_string(i)});
        refused += !id.has_value();
      }
    });
  }
  for (auto& t : threads) t.join();
  REQUIRE(refused == 0);
  REQUIRE(eventually([&] { return f.box.stats().value().count(status::completed) == producers * per_producer; },
                     120s));
  f.box.stop();

  CHECK(f.backend.duplicates() == 0);
  CHECK(f.backend.accepted_count() == producers * per_producer);
  // Each producer's events of one entity arrived in the order the producer enqueued them.
  std::map<std::string, int> last_payload;
  for (const auto& d : f.backend.accepted()) {
    const int n = std::stoi(d.payload);
    auto [it, fresh] = last_payload.emplace(d.entity_id, n);
    if (!fresh) {
      CHECK(it->second < n);
      it->second = n;
    }
  }
}

TEST_CASE("user switches under load never send one user's events in another's session", "[concurrency][session]") {
  outbox::options options;
  options.batch_size = 20;
  // The transport checks, on every send, that the batch belongs to the active user, unless a
  // switch is under way (set_user has not returned yet).
  std::atomic<bool> switching{false};
  std::atomic<int> violations{0};
  std::mutex expected_mutex;
  std::string expected = "alice";
  fixture f(options);
  f.backend.set_on_send([&](std::span<const outbox::event> batch) {
    if (switching) return;
    std::lock_guard lock(expected_mutex);
    for (const auto& e : batch) violations += e.user_id != expected;
  });
  auto switch_to = [&](const std::string& user) {
    switching = true;
    f.box.set_user(user);
    {
      std::lock_guard lock(expected_mutex);
      expected = user;
    }
    switching = false;
  };
  switch_to("alice");
  f.box.start();

  std::atomic<bool> done{false};
  std::atomic<int> refused{0};
  std::thread producer([&] {
    for (int i = 0; i < 4000; ++i) {
      refused += !f.box.enqueue({.type = "t", .entity_id = "e" + std::to_string(i % 30), .payload = "{}",
                                 .user_id = i % 2 ? "alice" : "bob"}).has_value();
    }
    done = true;
  });
  int switches = 0;
  while (!done || switches < 50) {
    switch_to(switches % 2 ? "alice" : "bob");
    ++switches;
    std::this_thread::yield();
  }
  producer.join();
  REQUIRE(refused == 0);
  // Drain both users.
  switch_to("alice");
  REQUIRE(eventually([&] { return f.box.stats("alice").value().count(status::completed) == 2000; }, 60s));
  switch_to("bob");
  REQUIRE(eventually([&] { return f.box.stats("bob").value().count(status::completed) == 2000; }, 60s));
  f.box.stop();
  CHECK(violations == 0);
  CHECK(f.backend.duplicates() == 0);
}
