// Backoff policies. The exponential defaults are the reference design's table and are pinned
// down exactly: 30 s, 60 s, 120 s, 240 s, 480 s, ... capped at 1 h.

#include <catch2/catch.hpp>

#include <chrono>
#include <climits>
#include <cstdint>
#include <limits>
#include <vector>

#include <outbox/outbox.hpp>

namespace {

using namespace std::chrono_literals;
using outbox::duration;
using outbox::exponential_backoff;

static_assert(outbox::backoff<outbox::exponential_backoff>);
static_assert(outbox::backoff<outbox::fixed_backoff>);
static_assert(outbox::backoff<outbox::no_backoff>);
static_assert(outbox::bounded_backoff<outbox::exponential_backoff>);
static_assert(!outbox::bounded_backoff<outbox::fixed_backoff>);
static_assert(!outbox::bounded_backoff<outbox::no_backoff>);

exponential_backoff::config with_jitter(outbox::jitter kind, std::uint64_t seed) {
  exponential_backoff::config c;
  c.jitter = kind;
  c.seed = seed;
  return c;
}

std::vector<duration> draw(exponential_backoff& b, int count) {
  std::vector<duration> delays;
  for (int i = 1; i <= count; ++i) delays.push_back(b.delay(i));
  return delays;
}

/// Expects `make()` to throw outbox::exception carrying errc::invalid_argument.
template <class F>
void require_invalid_argument(F make) {
  try {
    make();
    FAIL("the invalid configuration was accepted");
  } catch (const outbox::exception& ex) {
    CHECK(ex.code() == outbox::errc::invalid_argument);
    CHECK(ex.error() == outbox::errc::invalid_argument);
    CHECK_FALSE(ex.error().message.empty());
  }
}

}  // namespace

TEST_CASE("default exponential backoff reproduces the reference table", "[backoff]") {
  exponential_backoff b;
  CHECK(b.delay(1) == 30s);
  CHECK(b.delay(2) == 60s);
  CHECK(b.delay(3) == 120s);
  CHECK(b.delay(4) == 240s);
  CHECK(b.delay(5) == 480s);
}

TEST_CASE("default exponential backoff waits 15 min 30 s in total over five attempts", "[backoff]") {
  exponential_backoff b;
  duration total{};
  for (int attempt = 1; attempt <= 5; ++attempt) total += b.delay(attempt);
  CHECK(total == 930s);
  CHECK(total == 15min + 30s);
}

TEST_CASE("default exponential backoff keeps doubling until the one hour cap", "[backoff]") {
  exponential_backoff b;
  CHECK(b.delay(6) == 960s);
  CHECK(b.delay(7) == 1920s);  // 30 s * 2^6, still below the cap
  CHECK(b.delay(8) == 1h);     // 30 s * 2^7 = 3840 s would pass the cap
  CHECK(b.delay(9) == 1h);
  CHECK(b.max_delay() == 1h);
}

TEST_CASE("exponential backoff holds the cap for huge attempt numbers without overflow", "[backoff]") {
  exponential_backoff b;
  CHECK(b.delay(64) == 1h);
  CHECK(b.delay(1000) == 1h);
  CHECK(b.delay(100'000) == 1h);
  CHECK(b.delay(INT_MAX) == 1h);
}

TEST_CASE("exponential backoff counts attempts below 1 as the first", "[backoff]") {
  exponential_backoff b;
  CHECK(b.delay(0) == 30s);
  CHECK(b.delay(-1) == 30s);
  CHECK(b.delay(INT_MIN) == 30s);
}

TEST_CASE("default exponential backoff settings are the reference design's", "[backoff]") {
  const exponential_backoff b;
  CHECK(b.settings().base == 30s);
  CHECK(b.settings().factor == 2.0);
  CHECK(b.settings().cap == 1h);
  CHECK(b.settings().jitter == outbox::jitter::none);
  CHECK_FALSE(b.settings().seed.has_value());
}

TEST_CASE("exponential backoff follows a configured base, factor and cap", "[backoff]") {
  exponential_backoff::config c;
  c.base = 100ms;
  c.factor = 3.0;
  c.cap = 2s;
  exponential_backoff b(c);
  CHECK(b.delay(1) == 100ms);
  CHECK(b.delay(2) == 300ms);
  CHECK(b.delay(3) == 900ms);
  CHECK(b.delay(4) == 2s);  // 2700 ms capped
  CHECK(b.max_delay() == 2s);
}

TEST_CASE("exponential backoff with a fractional factor scales exactly", "[backoff]") {
  exponential_backoff::config c;
  c.base = 2s;
  c.factor = 1.5;
  exponential_backoff b(c);
  CHECK(b.delay(1) == 2s);
  CHECK(b.delay(2) == 3s);
  CHECK(b.delay(3) == 4500ms);
}

TEST_CASE("exponential backoff with factor 1 and cap equal to base is constant", "[backoff]") {
  exponential_backoff::config c;
  c.base = 5s;
  c.factor = 1.0;
  c.cap = 5s;
  exponential_backoff b(c);
  for (int attempt : {1, 2, 10, 1000}) CHECK(b.delay(attempt) == 5s);
}

TEST_CASE("full jitter keeps every delay within zero and the undithered delay", "[backoff][jitter]") {
  exponential_backoff b(with_jitter(outbox::jitter::full, 42));
  exponential_backoff plain;
  bool below_half = false;
  bool above_half = false;
  for (int round = 0; round < 200; ++round) {
    for (int attempt = 1; attempt <= 10; ++attempt) {
      const duration d = plain.delay(attempt);
      const duration j = b.delay(attempt);
      INFO("attempt " << attempt << ": " << j.count() << " of " << d.count());
      CHECK(j >= duration::zero());
      CHECK(j <= d);
      below_half = below_half || j < d / 2;
      above_half = above_half || j > d / 2;
    }
  }
  // The spread covers the whole range, not just one half of it.
  CHECK(below_half);
  CHECK(above_half);
}

TEST_CASE("equal jitter keeps every delay within half and all of the undithered delay",
          "[backoff][jitter]") {
  exponential_backoff b(with_jitter(outbox::jitter::equal, 42));
  exponential_backoff plain;
  bool varies = false;
  duration first{};
  for (int round = 0; round < 200; ++round) {
    for (int attempt = 1; attempt <= 10; ++attempt) {
      const duration d = plain.delay(attempt);
      const duration j = b.delay(attempt);
      INFO("attempt " << attempt << ": " << j.count() << " of " << d.count());
      CHECK(j >= d / 2);
      CHECK(j <= d);
      if (attempt == 1) {
        if (round == 0) first = j;
        varies = varies || j != first;
      }
    }
  }
  CHECK(varies);
}

TEST_CASE("jittered backoffs with the same seed give the same sequence", "[backoff][jitter]") {
  for (const auto kind : {outbox::jitter::full, outbox::jitter::equal}) {
    exponential_backoff a(with_jitter(kind, 1234));
    exponential_backoff b(with_jitter(kind, 1234));
    CHECK(draw(a, 50) == draw(b, 50));
  }
}

TEST_CASE("jittered backoffs with different seeds give different sequences", "[backoff][jitter]") {
  for (const auto kind : {outbox::jitter::full, outbox::jitter::equal}) {
    exponential_backoff a(with_jitter(kind, 1));
    exponential_backoff b(with_jitter(kind, 2));
    CHECK(draw(a, 50) != draw(b, 50));
  }
}

TEST_CASE("jittered backoffs without a seed do not share a sequence", "[backoff][jitter]") {
  exponential_backoff::config c;
  c.jitter = outbox::jitter::full;
  exponential_backoff a(c);
  exponential_backoff b(c);
  CHECK(draw(a, 20) != draw(b, 20));
}

TEST_CASE("a copied jittered backoff continues the same sequence", "[backoff][jitter]") {
  exponential_backoff original(with_jitter(outbox::jitter::full, 99));
  (void)original.delay(1);
  exponential_backoff copy = original;
  CHECK(draw(original, 20) == draw(copy, 20));
}

TEST_CASE("exponential backoff rejects a base that is not positive", "[backoff][config]") {
  exponential_backoff::config zero;
  zero.base = duration::zero();
  require_invalid_argument([&] { exponential_backoff b(zero); });

  exponential_backoff::config negative;
  negative.base = -1s;
  require_invalid_argument([&] { exponential_backoff b(negative); });
}

TEST_CASE("exponential backoff rejects a cap below the base", "[backoff][config]") {
  exponential_backoff::config c;
  c.base = 10s;
  c.cap = 9s;
  require_invalid_argument([&] { exponential_backoff b(c); });
}

TEST_CASE("exponential backoff rejects a factor below 1", "[backoff][config]") {
  for (const double factor : {0.999, 0.5, 0.0, -2.0}) {
    INFO("factor " << factor);
    exponential_backoff::config c;
    c.factor = factor;
    require_invalid_argument([&] { exponential_backoff b(c); });
  }
}

TEST_CASE("exponential backoff rejects a NaN or infinite factor", "[backoff][config]") {
  for (const double factor : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                              -std::numeric_limits<double>::infinity()}) {
    INFO("factor " << factor);
    exponential_backoff::config c;
    c.factor = factor;
    require_invalid_argument([&] { exponential_backoff b(c); });
  }
}

TEST_CASE("fixed backoff waits the same delay after every attempt", "[backoff]") {
  const outbox::fixed_backoff b(45s);
  for (int attempt : {1, 2, 5, 1000, INT_MAX}) CHECK(b.delay(attempt) == 45s);
}

TEST_CASE("fixed backoff defaults to 30 seconds", "[backoff]") {
  const outbox::fixed_backoff b;
  CHECK(b.delay(1) == 30s);
  CHECK(b.delay(7) == 30s);
}

TEST_CASE("fixed backoff accepts zero and rejects a negative delay", "[backoff][config]") {
  CHECK(outbox::fixed_backoff(duration::zero()).delay(3) == duration::zero());
  require_invalid_argument([] { outbox::fixed_backoff b(-1ms); });
}

TEST_CASE("no backoff retries at once after every attempt", "[backoff]") {
  const outbox::no_backoff b;
  for (int attempt : {0, 1, 2, 5, 1000}) CHECK(b.delay(attempt) == duration::zero());
}
