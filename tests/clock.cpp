// The shipped clocks: system_clock follows wall time; manual_clock moves only when told.

#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include <outbox/outbox.hpp>

namespace {

using namespace std::chrono_literals;

// 2026-01-01T00:00:00Z
const outbox::timestamp default_start = outbox::timestamp(std::chrono::seconds(1767225600));

}  // namespace

TEST_CASE("system_clock reads the wall clock", "[clock]") {
  const outbox::system_clock clock;
  const auto before = std::chrono::system_clock::now();
  const outbox::timestamp now = clock.now();
  const auto after = std::chrono::system_clock::now();
  CHECK(before <= now);
  CHECK(now <= after);
  CHECK(after - before < 1s);
}

TEST_CASE("manual_clock starts at 2026-01-01T00:00:00Z by default", "[clock]") {
  const outbox::manual_clock clock;
  CHECK(clock.now() == default_start);
  CHECK(outbox::to_micros(clock.now()) == 1767225600LL * 1'000'000);
}

TEST_CASE("manual_clock starts at the instant it is given", "[clock]") {
  const outbox::timestamp start = outbox::timestamp(std::chrono::seconds(1'000'000));
  const outbox::manual_clock clock(start);
  CHECK(clock.now() == start);
}

TEST_CASE("manual_clock does not move while real time passes", "[clock]") {
  const outbox::manual_clock clock;
  const outbox::timestamp first = clock.now();
  // Wait until real time has visibly moved on (a condition, not a guessed sleep).
  const auto real_start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - real_start < 2ms) std::this_thread::yield();
  CHECK(clock.now() == first);
  CHECK(clock.now() == default_start);
}

TEST_CASE("manual_clock advance moves time forward by exactly the step", "[clock]") {
  outbox::manual_clock clock;
  clock.advance(30s);
  CHECK(clock.now() == default_start + 30s);
  clock.advance(1ms);
  clock.advance(1us);
  CHECK(clock.now() == default_start + 30s + 1ms + 1us);
  clock.advance(outbox::duration::zero());
  CHECK(clock.now() == default_start + 30s + 1ms + 1us);
}

TEST_CASE("manual_clock advance with a negative step moves time back", "[clock]") {
  outbox::manual_clock clock;
  clock.advance(-1h);
  CHECK(clock.now() == default_start - 1h);
  clock.advance(2h);
  CHECK(clock.now() == default_start + 1h);
}

TEST_CASE("manual_clock set jumps to the given instant, forward or back", "[clock]") {
  outbox::manual_clock clock;
  const outbox::timestamp later = default_start + 24h;
  clock.set(later);
  CHECK(clock.now() == later);
  const outbox::timestamp earlier = default_start - 24h;
  clock.set(earlier);
  CHECK(clock.now() == earlier);
}

TEST_CASE("manual_clock copies share one timeline", "[clock]") {
  outbox::manual_clock original;
  outbox::manual_clock copy = original;
  copy.advance(5min);
  CHECK(original.now() == default_start + 5min);
  original.set(default_start + 1h);
  CHECK(copy.now() == default_start + 1h);

  outbox::manual_clock assigned(default_start - 1h);
  assigned = original;
  assigned.advance(1s);
  CHECK(original.now() == default_start + 1h + 1s);
}

TEST_CASE("separately constructed manual_clocks have separate timelines", "[clock]") {
  outbox::manual_clock a;
  const outbox::manual_clock b;
  a.advance(1min);
  CHECK(b.now() == default_start);
}

TEST_CASE("manual_clock on_change listener is called once per change", "[clock]") {
  outbox::manual_clock clock;
  int calls = 0;
  const auto subscription = clock.on_change([&] { ++calls; });
  CHECK(calls == 0);  // subscribing is not a change
  clock.advance(1s);
  CHECK(calls == 1);
  clock.set(default_start);
  CHECK(calls == 2);
  clock.advance(-1s);
  CHECK(calls == 3);
}

TEST_CASE("manual_clock on_change listener sees the new time", "[clock]") {
  outbox::manual_clock clock;
  std::vector<outbox::timestamp> seen;
  const auto subscription = clock.on_change([&] { seen.push_back(clock.now()); });
  clock.advance(10s);
  clock.set(default_start - 1min);
  REQUIRE(seen.size() == 2);
  CHECK(seen[0] == default_start + 10s);
  CHECK(seen[1] == default_start - 1min);
}

TEST_CASE("manual_clock on_change listener hears changes made through a copy", "[clock]") {
  outbox::manual_clock clock;
  int calls = 0;
  const auto subscription = clock.on_change([&] { ++calls; });
  outbox::manual_clock copy = clock;
  copy.advance(1s);
  CHECK(calls == 1);
}

TEST_CASE("manual_clock calls every subscribed listener", "[clock]") {
  outbox::manual_clock clock;
  int first = 0;
  int second = 0;
  const auto a = clock.on_change([&] { ++first; });
  const auto b = clock.on_change([&] { ++second; });
  clock.advance(1s);
  CHECK(first == 1);
  CHECK(second == 1);
}

TEST_CASE("manual_clock stops calling a listener once its subscription is destroyed", "[clock]") {
  outbox::manual_clock clock;
  int dropped = 0;
  int kept = 0;
  const auto keep = clock.on_change([&] { ++kept; });
  {
    const auto subscription = clock.on_change([&] { ++dropped; });
    clock.advance(1s);
    CHECK(dropped == 1);
  }
  clock.advance(1s);
  clock.set(default_start);
  CHECK(dropped == 1);
  CHECK(kept == 3);  // only the destroyed subscription was removed
}

TEST_CASE("manual_clock subscription keeps listening after being moved", "[clock]") {
  outbox::manual_clock clock;
  int calls = 0;
  std::optional<outbox::manual_clock::subscription> holder;
  {
    auto subscription = clock.on_change([&] { ++calls; });
    holder.emplace(std::move(subscription));
  }  // the moved-from subscription is destroyed here and must not unsubscribe
  clock.advance(1s);
  CHECK(calls == 1);

  outbox::manual_clock::subscription assigned;
  assigned = std::move(*holder);
  holder.reset();
  clock.advance(1s);
  CHECK(calls == 2);

  assigned = outbox::manual_clock::subscription();  // assigning over it unsubscribes
  clock.advance(1s);
  CHECK(calls == 2);
}

TEST_CASE("manual_clock subscription may outlive the clock", "[clock]") {
  int calls = 0;
  outbox::manual_clock::subscription subscription;
  {
    outbox::manual_clock clock;
    subscription = clock.on_change([&] { ++calls; });
    clock.advance(1s);
  }
  CHECK(calls == 1);
  // Destroying the subscription now must not touch the destroyed clock (ASan would report it).
  subscription = outbox::manual_clock::subscription();
  CHECK(calls == 1);
}

TEST_CASE("manual_clock listeners run on the thread that changed the time", "[clock]") {
  outbox::manual_clock clock;
  std::thread::id listener_thread;
  const auto subscription = clock.on_change([&] { listener_thread = std::this_thread::get_id(); });
  std::thread changer([clock]() mutable { clock.advance(1s); });
  const std::thread::id changer_id = changer.get_id();
  changer.join();
  CHECK(listener_thread == changer_id);
  CHECK(clock.now() == default_start + 1s);
}

TEST_CASE("to_micros and from_micros convert between timestamps and Unix microseconds", "[clock]") {
  CHECK(outbox::to_micros(outbox::timestamp{}) == 0);
  CHECK(outbox::to_micros(default_start + 1500us) == 1767225600LL * 1'000'000 + 1500);
  CHECK(outbox::from_micros(1767225600LL * 1'000'000 + 1500) == default_start + 1500us);
  CHECK(outbox::from_micros(-1) == outbox::timestamp{} - 1us);
  const outbox::timestamp now = std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now());
  CHECK(outbox::from_micros(outbox::to_micros(now)) == now);
}
