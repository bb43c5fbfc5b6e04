// outbox::detail::id_index: the memory state's flat map from event id to seq (open addressing,
// linear probing, backward-shift deletion).

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <unordered_map>
#include <utility>
#include <vector>

#include <outbox/detail/id_index.hpp>

namespace {

using outbox::event_id;
using outbox::detail::id_index;

event_id id_of(std::uint64_t high, std::uint64_t low) {
  event_id id;
  id.high = high;
  id.low = low;
  return id;
}

/// Ids whose home is the last slot of a fresh (16-slot) table: the first id inserted into an
/// empty index sits at its home, so `slot_of` tells where that is.
std::vector<event_id> ids_homed_at_last_slot(std::size_t count) {
  std::vector<event_id> found;
  for (std::uint64_t n = 1; found.size() < count; ++n) {
    id_index probe;
    const event_id id = id_of(n, 0x8000'0000'0000'0000ULL | n);
    probe.insert_or_assign(id, n);
    if (probe.slot_of(id) == probe.capacity() - 1) found.push_back(id);
  }
  return found;
}

/// An id whose home in a fresh table is `slot`.
event_id id_homed_at(std::size_t slot, std::uint64_t start) {
  for (std::uint64_t n = start;; ++n) {
    id_index probe;
    const event_id id = id_of(n, 0x8000'0000'0000'0000ULL | n);
    probe.insert_or_assign(id, n);
    if (probe.slot_of(id) == slot) return id;
  }
}

}  // namespace

TEST_CASE("an empty id_index finds nothing, and never the nil id", "[detail][id_index]") {
  id_index index;
  CHECK(index.empty());
  CHECK(index.capacity() == 0);
  CHECK_FALSE(index.find(id_of(1, 2)).has_value());
  CHECK_FALSE(index.contains(event_id{}));
  CHECK_FALSE(index.erase(id_of(1, 2)));
  index.insert_or_assign(id_of(1, 2), 7);
  CHECK_FALSE(index.contains(event_id{}));
  CHECK_FALSE(index.erase(event_id{}));
}

TEST_CASE("id_index inserts, finds, replaces and erases", "[detail][id_index]") {
  id_index index;
  index.insert_or_assign(id_of(1, 10), 100);
  index.insert_or_assign(id_of(2, 20), 200);
  CHECK(index.size() == 2);
  CHECK(index.find(id_of(1, 10)) == std::optional<std::uint64_t>(100));
  CHECK(index.find(id_of(2, 20)) == std::optional<std::uint64_t>(200));
  CHECK_FALSE(index.contains(id_of(1, 20)));

  index.insert_or_assign(id_of(1, 10), 101);  // the same id again: replaced, not added
  CHECK(index.size() == 2);
  CHECK(index.find(id_of(1, 10)) == std::optional<std::uint64_t>(101));

  CHECK(index.erase(id_of(1, 10)));
  CHECK_FALSE(index.erase(id_of(1, 10)));
  CHECK(index.size() == 1);
  CHECK_FALSE(index.contains(id_of(1, 10)));
  CHECK(index.find(id_of(2, 20)) == std::optional<std::uint64_t>(200));
}

TEST_CASE("id_index grows in powers of two and stays at most half full", "[detail][id_index]") {
  id_index index;
  std::size_t last_capacity = 0;
  int growths = 0;
  for (std::uint64_t n = 1; n <= 10'000; ++n) {
    index.insert_or_assign(id_of(n, n * 0x9E37'79B9'7F4A'7C15ULL), n);
    const std::size_t capacity = index.capacity();
    REQUIRE((capacity & (capacity - 1)) == 0);
    REQUIRE(2 * index.size() <= capacity);
    if (capacity != last_capacity) ++growths;
    last_capacity = capacity;
  }
  CHECK(growths > 5);
  for (std::uint64_t n = 1; n <= 10'000; ++n)
    REQUIRE(index.find(id_of(n, n * 0x9E37'79B9'7F4A'7C15ULL)) == std::optional<std::uint64_t>(n));
}

TEST_CASE("ids that differ only in their high word still spread over the table", "[detail][id_index]") {
  // Hand-made ids (tests, tools) often have a zero low word; their slots must not then depend
  // on the low bits alone, or they would pile up in one run that every lookup walks.
  id_index index;
  std::vector<std::size_t> slots;
  for (std::uint64_t n = 1; n <= 4096; ++n) index.insert_or_assign(id_of(n << 16, 0), n);
  for (std::uint64_t n = 1; n <= 4096; ++n) {
    REQUIRE(index.find(id_of(n << 16, 0)) == std::optional<std::uint64_t>(n));
    slots.push_back(*index.slot_of(id_of(n << 16, 0)));
  }
  std::sort(slots.begin(), slots.end());
  std::size_t longest_run = 1;
  std::size_t run = 1;
  for (std::size_t i = 1; i < slots.size(); ++i) {
    run = slots[i] == slots[i - 1] + 1 ? run + 1 : 1;
    longest_run = std::max(longest_run, run);
  }
  CHECK(longest_run < 200);  // one pile would be a run of 4096
}

TEST_CASE("id_index erases across the end of the table", "[detail][id_index]") {
  // Three ids at home in the last slot: they sit at 15, 0 and 1. An id at home in slot 0
  // follows them, at 2. Erasing the first must shift the others back across the wrap.
  const std::vector<event_id> last = ids_homed_at_last_slot(3);
  const event_id zero = id_homed_at(0, 1'000'000);
  id_index index;
  for (std::size_t i = 0; i < last.size(); ++i) index.insert_or_assign(last[i], i + 1);
  index.insert_or_assign(zero, 99);
  REQUIRE(index.capacity() == 16);
  REQUIRE(index.slot_of(last[0]) == std::optional<std::size_t>(15));
  REQUIRE(index.slot_of(last[1]) == std::optional<std::size_t>(0));
  REQUIRE(index.slot_of(last[2]) == std::optional<std::size_t>(1));
  REQUIRE(index.slot_of(zero) == std::optional<std::size_t>(2));

  CHECK(index.erase(last[0]));
  CHECK(index.slot_of(last[1]) == std::optional<std::size_t>(15));
  CHECK(index.slot_of(last[2]) == std::optional<std::size_t>(0));
  CHECK(index.slot_of(zero) == std::optional<std::size_t>(1));
  CHECK(index.find(last[1]) == std::optional<std::uint64_t>(2));
  CHECK(index.find(last[2]) == std::optional<std::uint64_t>(3));
  CHECK(index.find(zero) == std::optional<std::uint64_t>(99));

  // An entry already at its home stays put: erasing the one before it leaves it there.
  CHECK(index.erase(last[2]));
  CHECK(index.slot_of(zero) == std::optional<std::size_t>(0));
  CHECK(index.erase(last[1]));
  CHECK(index.slot_of(zero) == std::optional<std::size_t>(0));
  CHECK(index.size() == 1);
}

TEST_CASE("id_index agrees with std::unordered_map over many random operations", "[detail][id_index]") {
  std::mt19937_64 random(20261121);
  id_index index;
  std::unordered_map<event_id, std::uint64_t> reference;
  // A small key space, so that inserts hit existing ids and erases hit present ones; some ids
  // differ only in their high word.
  std::vector<event_id> keys;
  for (std::uint64_t n = 1; n <= 3000; ++n)
    keys.push_back(n % 3 == 0 ? id_of(n, 0) : id_of(random() | 1, random()));
  for (int step = 0; step < 200'000; ++step) {
    const event_id& key = keys[random() % keys.size()];
    switch (random() % 4) {
      case 0:
      case 1: {
        const std::uint64_t seq = random();
        index.insert_or_assign(key, seq);
        reference[key] = seq;
        break;
      }
      case 2: REQUIRE(index.erase(key) == (reference.erase(key) == 1)); break;
      default: {
        auto found = reference.find(key);
        REQUIRE(index.find(key) == (found == reference.end() ? std::nullopt : std::optional(found->second)));
      }
    }
    REQUIRE(index.size() == reference.size());
  }
  for (const event_id& key : keys) {
    auto found = reference.find(key);
    REQUIRE(index.find(key) == (found == reference.end() ? std::nullopt : std::optional(found->second)));
  }
}

TEST_CASE("a moved-from id_index is empty and usable", "[detail][id_index]") {
  id_index first;
  first.insert_or_assign(id_of(1, 1), 1);
  id_index second = std::move(first);
  CHECK(second.find(id_of(1, 1)) == std::optional<std::uint64_t>(1));
  CHECK(first.empty());  // NOLINT(bugprone-use-after-move): what moving leaves is the point
  first.insert_or_assign(id_of(2, 2), 2);
  CHECK(first.size() == 1);
  CHECK(first.find(id_of(2, 2)) == std::optional<std::uint64_t>(2));
  second = std::move(first);
  CHECK(second.size() == 1);
  CHECK_FALSE(second.contains(id_of(1, 1)));
}
