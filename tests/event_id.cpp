// outbox::event_id and outbox::event_id_generator: the UUID-v7 layout, its text form, ordering
// and uniqueness.

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include <outbox/outbox.hpp>

namespace {

using namespace std::chrono_literals;

// 2026-01-01T00:00:00.123Z
const outbox::timestamp some_instant = outbox::timestamp(std::chrono::milliseconds(1767225600123));

std::uint64_t millis_of(outbox::timestamp t) {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count());
}

bool is_lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

}  // namespace

TEST_CASE("a default event_id is nil and a generated one is not", "[event_id]") {
  const outbox::event_id nil;
  CHECK(nil.is_nil());
  CHECK(nil.to_string() == "00000000-0000-0000-0000-000000000000");

  outbox::event_id_generator generator(1);
  CHECK_FALSE(generator.next(some_instant).is_nil());
}

TEST_CASE("generated ids carry UUID version 7 and the RFC 9562 variant", "[event_id]") {
  outbox::event_id_generator generator(7);
  for (int i = 0; i < 1000; ++i) {
    const outbox::event_id id = generator.next(some_instant + std::chrono::milliseconds(i / 3));
    INFO(id.to_string());
    CHECK(((id.high >> 12) & 0xF) == 7);  // version nibble
    CHECK((id.low >> 62) == 0b10);        // variant bits
    const std::string text = id.to_string();
    CHECK(text[14] == '7');
    CHECK((text[19] == '8' || text[19] == '9' || text[19] == 'a' || text[19] == 'b'));
  }
}

TEST_CASE("unix_millis of a generated id is the millisecond given to the generator", "[event_id]") {
  outbox::event_id_generator generator(3);
  const outbox::event_id first = generator.next(some_instant);
  CHECK(first.unix_millis() == 1767225600123ULL);

  // Sub-millisecond parts are truncated, not rounded.
  const outbox::timestamp later = some_instant + 5ms + 999us;
  const outbox::event_id second = generator.next(later);
  CHECK(second.unix_millis() == millis_of(some_instant + 5ms));

  // A fresh generator at the real current time.
  outbox::event_id_generator fresh;
  const outbox::timestamp now = std::chrono::system_clock::now();
  CHECK(fresh.next(now).unix_millis() == millis_of(now));
}

TEST_CASE("to_string prints 8-4-4-4-12 lowercase hex", "[event_id]") {
  outbox::event_id_generator generator(11);
  for (int i = 0; i < 100; ++i) {
    const std::string text = generator.next(some_instant + std::chrono::milliseconds(i)).to_string();
    INFO(text);
    REQUIRE(text.size() == 36);
    for (std::size_t pos = 0; pos < text.size(); ++pos) {
      if (pos == 8 || pos == 13 || pos == 18 || pos == 23) {
        CHECK(text[pos] == '-');
      } else {
        CHECK(is_lower_hex(text[pos]));
      }
    }
  }
}

TEST_CASE("to_string writes the high word first, most significant nibble first", "[event_id]") {
  outbox::event_id id;
  id.high = 0x0190'a1b2'c3d4'7e5fULL;
  id.low = 0x8a9b'0c1d'2e3f'4a5bULL;
  CHECK(id.to_string() == "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
  CHECK(id.unix_millis() == 0x0190'a1b2'c3d4ULL);
}

TEST_CASE("parse reads back what to_string wrote", "[event_id]") {
  outbox::event_id_generator generator(5);
  for (int i = 0; i < 1000; ++i) {
    const outbox::event_id id = generator.next(some_instant + std::chrono::milliseconds(i));
    const std::optional<outbox::event_id> parsed = outbox::event_id::parse(id.to_string());
    REQUIRE(parsed.has_value());
    CHECK(*parsed == id);
  }
}

TEST_CASE("parse accepts upper case hex", "[event_id]") {
  const auto lower = outbox::event_id::parse("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
  const auto upper = outbox::event_id::parse("0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B");
  REQUIRE(lower.has_value());
  REQUIRE(upper.has_value());
  CHECK(*lower == *upper);
  CHECK(lower->high == 0x0190'a1b2'c3d4'7e5fULL);
  CHECK(lower->low == 0x8a9b'0c1d'2e3f'4a5bULL);
}

TEST_CASE("parse rejects strings of the wrong length", "[event_id]") {
  const char* bad[] = {
      "",
      "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5",    // 35
      "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b0",  // 37
      "0190a1b2c3d47e5f8a9b0c1d2e3f4a5b",       // no dashes, 32
      "{0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b}",  // braces
      " 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",  // leading space
  };
  for (const char* text : bad) {
    INFO('"' << text << '"');
    CHECK_FALSE(outbox::event_id::parse(text).has_value());
  }
}

TEST_CASE("parse rejects characters that are not hex digits", "[event_id]") {
  const char* bad[] = {
      "g190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",  // g in the first group
      "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5z",  // z at the end
      "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5 ",  // space at the end
      "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5-",  // dash where a digit belongs
      "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4:5b",  // ':' sits right after '9' in ASCII
      "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4@5b",  // '@' sits right before 'A'
      "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4`5b",  // '`' sits right before 'a'
      "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4G5b",  // 'G' right after 'F'
  };
  for (const char* text : bad) {
    INFO('"' << text << '"');
    CHECK_FALSE(outbox::event_id::parse(text).has_value());
  }
}

TEST_CASE("parse rejects dashes in the wrong places", "[event_id]") {
  const char* bad[] = {
      "0190a1b-2c3d4-7e5f-8a9b-0c1d2e3f4a5b",  // first dash one early
      "0190a1b2c-3d4-7e5f-8a9b-0c1d2e3f4a5b",  // first dash one late
      "0190a1b2-c3d-47e5f-8a9b-0c1d2e3f4a5b",  // second dash one early
      "0190a1b2-c3d4-7e5-f8a9b-0c1d2e3f4a5b",  // third dash one early
      "0190a1b2-c3d4-7e5f-8a9b0-c1d2e3f4a5b",  // fourth dash one late
      "0190a1b2_c3d4_7e5f_8a9b_0c1d2e3f4a5b",  // underscores instead of dashes
      "0190a1b2c3d4-7e5f-8a9b-0c1d2e3f4a5b-",  // first dash moved to the end
  };
  for (const char* text : bad) {
    INFO('"' << text << '"');
    CHECK_FALSE(outbox::event_id::parse(text).has_value());
  }
}

TEST_CASE("ids compare by value and order by their high word first", "[event_id]") {
  outbox::event_id a;
  a.high = 1;
  a.low = 0xFFFF'FFFF'FFFF'FFFFULL;
  outbox::event_id b;
  b.high = 2;
  b.low = 0;
  CHECK(a < b);
  CHECK(a != b);
  outbox::event_id a_copy = a;
  CHECK(a_copy == a);
  a_copy.low ^= 1;
  CHECK(a_copy != a);
}

TEST_CASE("100k ids generated within one millisecond strictly increase", "[event_id]") {
  outbox::event_id_generator generator(13);
  outbox::event_id previous = generator.next(some_instant);
  for (int i = 0; i < 100'000; ++i) {
    const outbox::event_id id = generator.next(some_instant);
    if (!(previous < id)) {
      FAIL("id " << i << " " << id.to_string() << " is not after " << previous.to_string());
    }
    CHECK(((id.high >> 12) & 0xF) == 7);  // counter overflow never spills into the version
    previous = id;
  }
  // The ids stay close to the clock: 100k ids borrow at most ~50 ms (2048 per millisecond).
  CHECK(previous.unix_millis() >= millis_of(some_instant));
  CHECK(previous.unix_millis() <= millis_of(some_instant) + 100);
}

TEST_CASE("a burst of 2048 ids within one millisecond keeps that millisecond", "[event_id]") {
  // Each millisecond's 12-bit counter starts in its lower half, so at least 2048 ids fit
  // before the generator has to borrow the next millisecond.
  outbox::event_id_generator generator(29);
  for (int ms = 0; ms < 50; ++ms) {
    const outbox::timestamp t = some_instant + std::chrono::milliseconds(ms * 10);
    for (int i = 0; i <= 2048; ++i) {
      const outbox::event_id id = generator.next(t);
      if (id.unix_millis() != millis_of(t)) {
        FAIL("id " << i << " of millisecond " << ms << " moved to " << id.unix_millis());
      }
    }
  }
}

TEST_CASE("ids keep increasing when the clock steps backwards", "[event_id]") {
  outbox::event_id_generator generator(17);
  const outbox::event_id before_jump = generator.next(some_instant);
  outbox::event_id previous = before_jump;
  // The wall clock jumps back an hour, then creeps forward again.
  for (int i = 0; i < 100'000; ++i) {
    const outbox::event_id id = generator.next(some_instant - 1h + std::chrono::microseconds(i));
    if (!(previous < id)) {
      FAIL("id " << i << " " << id.to_string() << " is not after " << previous.to_string());
    }
    previous = id;
  }
  CHECK(previous.unix_millis() >= before_jump.unix_millis());

  // Once the clock is past the last used millisecond, ids follow the clock again.
  const outbox::timestamp much_later = some_instant + 1h;
  const outbox::event_id resumed = generator.next(much_later);
  CHECK(previous < resumed);
  CHECK(resumed.unix_millis() == millis_of(much_later));
}

TEST_CASE("ids generated concurrently on 4 threads are all unique", "[event_id]") {
  constexpr int thread_count = 4;
  constexpr int per_thread = 25'000;
  outbox::event_id_generator generator;
  std::vector<std::vector<outbox::event_id>> made(thread_count);
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < thread_count; ++t) {
      threads.emplace_back([&generator, &ids = made[static_cast<std::size_t>(t)]] {
        ids.reserve(per_thread);
        // A few distinct milliseconds so threads collide both within and across them.
        for (int i = 0; i < per_thread; ++i)
          ids.push_back(generator.next(some_instant + std::chrono::milliseconds(i / 5'000)));
      });
    }
    for (auto& thread : threads) thread.join();
  }

  std::unordered_set<outbox::event_id> all;
  for (const auto& ids : made) {
    // Each thread sees its own ids strictly increasing.
    CHECK(std::adjacent_find(ids.begin(), ids.end(), [](const auto& a, const auto& b) { return !(a < b); }) ==
          ids.end());
    all.insert(ids.begin(), ids.end());
  }
  CHECK(all.size() == static_cast<std::size_t>(thread_count * per_thread));
}

TEST_CASE("event_id works as a key of unordered containers via std::hash", "[event_id]") {
  outbox::event_id_generator generator(19);
  std::unordered_set<outbox::event_id> set;
  std::vector<outbox::event_id> ids;
  for (int i = 0; i < 1000; ++i) ids.push_back(generator.next(some_instant));
  for (const auto& id : ids) CHECK(set.insert(id).second);
  CHECK(set.size() == ids.size());
  for (const auto& id : ids) CHECK_FALSE(set.insert(id).second);  // equal ids hash equally
  CHECK(set.contains(ids.front()));
  CHECK_FALSE(set.contains(outbox::event_id{}));

  // Equal values give equal hashes; the hash spreads ids that differ in one word only.
  const std::hash<outbox::event_id> hash;
  outbox::event_id a;
  a.high = 0x0190'a1b2'c3d4'7000ULL;
  outbox::event_id b = a;
  CHECK(hash(a) == hash(b));
  b.high += 1;
  CHECK(hash(a) != hash(b));
}

TEST_CASE("generators with the same seed and times produce the same ids", "[event_id]") {
  outbox::event_id_generator first(23);
  outbox::event_id_generator second(23);
  outbox::event_id_generator other(24);
  bool differs_from_other = false;
  for (int i = 0; i < 10; ++i) {
    const outbox::timestamp t = some_instant + std::chrono::milliseconds(i);
    const outbox::event_id a = first.next(t);
    CHECK(a == second.next(t));
    differs_from_other = differs_from_other || a != other.next(t);
  }
  CHECK(differs_from_other);
}

TEST_CASE("a batch of ids is what next(now) gives one at a time, across a counter overflow", "[event_id]") {
  outbox::event_id_generator batched(31);
  outbox::event_id_generator single(31);
  std::vector<outbox::event_id> batch(5000);  // past the 4096 a millisecond's counter holds
  batched.next(some_instant, batch);
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const outbox::event_id id = single.next(some_instant);
    if (batch[i] != id) FAIL("id " << i << " of the batch is " << batch[i].to_string() << ", not " << id.to_string());
  }
  CHECK(std::adjacent_find(batch.begin(), batch.end(), [](const auto& a, const auto& b) { return !(a < b); }) ==
        batch.end());
  CHECK(batch.back().unix_millis() > millis_of(some_instant));  // borrowed the next millisecond
  // The generator goes on after the batch as it would after as many single calls.
  CHECK(batched.next(some_instant) == single.next(some_instant));
}
