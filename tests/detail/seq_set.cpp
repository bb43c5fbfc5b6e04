// outbox::detail::seq_set: an ordered set of seqs kept as bits in blocks of 1024.

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include <outbox/detail/seq_set.hpp>

namespace {

using outbox::detail::seq_set;

std::vector<std::uint64_t> contents(const seq_set& s) { return {s.begin(), s.end()}; }

std::vector<std::uint64_t> after(const seq_set& s, std::uint64_t seq) { return {s.upper_bound(seq), s.end()}; }

}  // namespace

TEST_CASE("a seq_set holds each seq once, in ascending order", "[detail][seq_set]") {
  seq_set s;
  CHECK(s.empty());
  CHECK(s.begin() == s.end());
  CHECK(s.insert(5000));
  CHECK(s.insert(7));
  CHECK(s.insert(1023));
  CHECK(s.insert(1024));
  CHECK_FALSE(s.insert(7));
  CHECK(s.size() == 4);
  CHECK(contents(s) == std::vector<std::uint64_t>{7, 1023, 1024, 5000});
  CHECK(*s.begin() == 7);
  CHECK(s.contains(1024));
  CHECK_FALSE(s.contains(1025));
}

TEST_CASE("a seq_set gives the seqs after one, across blocks", "[detail][seq_set]") {
  seq_set s;
  for (std::uint64_t seq : {3, 64, 65, 1023, 4096, 9000}) s.insert(seq);
  CHECK(after(s, 0) == std::vector<std::uint64_t>{3, 64, 65, 1023, 4096, 9000});
  CHECK(after(s, 3) == std::vector<std::uint64_t>{64, 65, 1023, 4096, 9000});
  CHECK(after(s, 64) == std::vector<std::uint64_t>{65, 1023, 4096, 9000});
  CHECK(after(s, 1023) == std::vector<std::uint64_t>{4096, 9000});
  CHECK(after(s, 2000) == std::vector<std::uint64_t>{4096, 9000});
  CHECK(after(s, 9000).empty());
  CHECK(after(s, UINT64_MAX).empty());
}

TEST_CASE("a seq_set erases what it holds and drops emptied blocks", "[detail][seq_set]") {
  seq_set s;
  s.insert(10);
  s.insert(2000);
  CHECK(s.erase(10) == 1);
  CHECK(s.erase(10) == 0);
  CHECK(s.erase(99999) == 0);
  CHECK(contents(s) == std::vector<std::uint64_t>{2000});
  CHECK(s.erase(2000) == 1);
  CHECK(s.empty());
  CHECK(s.begin() == s.end());
  CHECK(s.insert(10));  // a block dropped and made again
  CHECK(contents(s) == std::vector<std::uint64_t>{10});
}

TEST_CASE("a seq_set agrees with std::set under random inserts and erases", "[detail][seq_set]") {
  std::mt19937_64 random(7);
  seq_set s;
  std::set<std::uint64_t> model;
  for (int step = 0; step < 20000; ++step) {
    const std::uint64_t seq = random() % 5000;
    if (random() % 3 == 0) {
      CHECK(s.erase(seq) == model.erase(seq));
    } else {
      CHECK(s.insert(seq) == model.insert(seq).second);
    }
  }
  CHECK(s.size() == model.size());
  CHECK(contents(s) == std::vector<std::uint64_t>(model.begin(), model.end()));
  const std::uint64_t from = 2500;
  CHECK(after(s, from) == std::vector<std::uint64_t>(model.upper_bound(from), model.end()));

  seq_set copy = s;  // copies and moves keep the contents and the source usable
  seq_set moved = std::move(copy);
  CHECK(contents(moved) == contents(s));
  CHECK(copy.empty());
  CHECK(copy.insert(1));
}
