// outbox::detail::seq_sizes: the file storage's size of each live event's latest record.

#include <catch2/catch.hpp>

#include <cstdint>
#include <map>
#include <random>

#include <outbox/detail/seq_sizes.hpp>

using outbox::detail::seq_sizes;

TEST_CASE("seq_sizes returns the size a seq replaces or loses, 0 when it had none", "[detail][seq_sizes]") {
  seq_sizes s;
  CHECK(s.set(7, 100) == 0);
  CHECK(s.get(7) == 100);
  CHECK(s.set(7, 120) == 100);
  CHECK(s.get(7) == 120);
  CHECK(s.erase(7) == 120);
  CHECK(s.get(7) == 0);
  CHECK(s.erase(7) == 0);
  CHECK(s.erase(123456) == 0);  // never set, no page for it
  CHECK(s.size() == 0);
}

TEST_CASE("seq_sizes frees a page with its last seq and keeps far-apart seqs apart", "[detail][seq_sizes]") {
  seq_sizes s;
  const std::uint64_t far = std::uint64_t{1} << 62;  // a log read back may hold any seq
  for (std::uint64_t seq = 1; seq <= 3 * seq_sizes::page_seqs; ++seq) s.set(seq, 50);
  s.set(far, 60);
  CHECK(s.pages() == 5);  // seqs 1..768 span pages 0-3, and `far` has its own
  CHECK(s.get(far) == 60);
  CHECK(s.get(far - 1) == 0);
  for (std::uint64_t seq = 1; seq < seq_sizes::page_seqs; ++seq) s.erase(seq);  // page 0
  CHECK(s.pages() == 4);
  CHECK(s.erase(far) == 60);
  CHECK(s.pages() == 3);
  CHECK(s.size() == 2 * seq_sizes::page_seqs + 1);
  CHECK(s.set(far, 70) == 0);  // a freed page comes back empty
  s.clear();
  CHECK(s.size() == 0);
  CHECK(s.get(300) == 0);
}

TEST_CASE("seq_sizes agrees with a map through random sets and erases", "[detail][seq_sizes]") {
  std::mt19937_64 rng(GENERATE(1u, 2u, 3u));
  seq_sizes s;
  std::map<std::uint64_t, std::uint32_t> model;
  std::uint64_t next = 1;
  for (int step = 0; step < 20000; ++step) {
    const auto roll = rng() % 10;
    if (roll < 5) {  // a new event
      const auto bytes = static_cast<std::uint32_t>(1 + rng() % 500);
      CHECK(s.set(next, bytes) == 0);
      model[next++] = bytes;
    } else if (roll < 7 && !model.empty()) {  // an update of a live one
      auto it = model.lower_bound(1 + rng() % next);
      if (it == model.end()) continue;
      const auto bytes = static_cast<std::uint32_t>(1 + rng() % 500);
      CHECK(s.set(it->first, bytes) == it->second);
      it->second = bytes;
    } else {  // a removal, of a live seq or of one already gone
      const std::uint64_t seq = 1 + rng() % next;
      const auto it = model.find(seq);
      CHECK(s.erase(seq) == (it == model.end() ? 0 : it->second));
      if (it != model.end()) model.erase(it);
    }
  }
  CHECK(s.size() == model.size());
  for (const auto& [seq, bytes] : model) REQUIRE(s.get(seq) == bytes);
  std::size_t pages = 0;
  std::uint64_t last = ~std::uint64_t{0};
  for (const auto& entry : model) {
    const std::uint64_t page = entry.first >> seq_sizes::page_bits;
    if (page != last) ++pages;
    last = page;
  }
  CHECK(s.pages() == pages);  // no page outlives its last seq
}
