// outbox::detail::seq_deque: the sorted seqs of one ordering key's line, in a ring buffer.

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include <outbox/detail/seq_deque.hpp>

namespace {

using outbox::detail::seq_deque;

std::vector<std::uint64_t> contents(const seq_deque& d) {
  std::vector<std::uint64_t> out;
  for (std::size_t i = 0; i < d.size(); ++i) out.push_back(d[i]);
  return out;
}

}  // namespace

TEST_CASE("a seq_deque takes seqs at its back and gives them up at its front", "[detail][seq_deque]") {
  seq_deque d;
  CHECK(d.empty());
  for (std::uint64_t seq = 1; seq <= 10; ++seq) d.insert(seq * 10);
  CHECK(d.size() == 10);
  CHECK(d.front() == 10);
  CHECK(d.back() == 100);
  d.erase(10);
  d.erase(20);
  CHECK(d.front() == 30);
  CHECK(contents(d) == std::vector<std::uint64_t>{30, 40, 50, 60, 70, 80, 90, 100});
}

TEST_CASE("a seq_deque keeps its seqs sorted whatever the order they come in", "[detail][seq_deque]") {
  seq_deque d;
  for (std::uint64_t seq : {50, 10, 90, 30, 70, 20, 80, 40, 60}) d.insert(seq);
  CHECK(contents(d) == std::vector<std::uint64_t>{10, 20, 30, 40, 50, 60, 70, 80, 90});
  d.insert(15);  // near the front
  d.insert(85);  // near the back
  CHECK(contents(d) == std::vector<std::uint64_t>{10, 15, 20, 30, 40, 50, 60, 70, 80, 85, 90});
  d.erase(20);  // front half
  d.erase(80);  // back half
  CHECK(contents(d) == std::vector<std::uint64_t>{10, 15, 30, 40, 50, 60, 70, 85, 90});
  CHECK(d.contains(50));
  CHECK_FALSE(d.contains(80));
}

TEST_CASE("a seq_deque ignores a seq it has and an erase of one it lacks", "[detail][seq_deque]") {
  seq_deque d;
  d.erase(5);  // empty
  d.insert(5);
  d.insert(7);
  d.insert(5);
  d.insert(7);
  d.erase(6);
  d.erase(1);
  d.erase(9);
  CHECK(contents(d) == std::vector<std::uint64_t>{5, 7});
}

TEST_CASE("a seq_deque wraps around its ring as a line moves on", "[detail][seq_deque]") {
  // A line in steady state: one in at the back, one out at the front, many times over; the
  // ring's start moves all the way round, with inserts and erases in the middle on the way.
  seq_deque d;
  std::set<std::uint64_t> reference;
  std::uint64_t next = 1;
  for (int i = 0; i < 5; ++i) {
    d.insert(next);
    reference.insert(next++);
  }
  for (int step = 0; step < 100; ++step) {
    d.insert(next);
    reference.insert(next++);
    d.erase(*reference.begin());
    reference.erase(reference.begin());
    if (step % 7 == 3) {  // out of the middle, and back in
      const std::uint64_t middle = *std::next(reference.begin(), 2);
      d.erase(middle);
      REQUIRE(contents(d) != std::vector<std::uint64_t>(reference.begin(), reference.end()));
      d.insert(middle);
    }
    REQUIRE(contents(d) == std::vector<std::uint64_t>(reference.begin(), reference.end()));
  }
}

TEST_CASE("seq_deque agrees with std::set over many random operations", "[detail][seq_deque]") {
  std::mt19937_64 random(11);
  seq_deque d;
  std::set<std::uint64_t> reference;
  for (int step = 0; step < 50'000; ++step) {
    const std::uint64_t seq = random() % 300;
    switch (random() % 5) {
      case 0:
      case 1:
        d.insert(seq);
        reference.insert(seq);
        break;
      case 2:
        d.erase(seq);
        reference.erase(seq);
        break;
      case 3:  // the line's usual move: its head leaves
        if (!reference.empty()) {
          REQUIRE(d.front() == *reference.begin());
          d.erase(d.front());
          reference.erase(reference.begin());
        }
        break;
      default: REQUIRE(d.contains(seq) == reference.contains(seq));
    }
    REQUIRE(d.size() == reference.size());
    if (!reference.empty()) {
      REQUIRE(d.front() == *reference.begin());
      REQUIRE(d.back() == *reference.rbegin());
    }
  }
  CHECK(contents(d) == std::vector<std::uint64_t>(reference.begin(), reference.end()));
}

TEST_CASE("a moved-from seq_deque is empty and usable", "[detail][seq_deque]") {
  seq_deque first;
  first.insert(1);
  first.insert(2);
  seq_deque second = std::move(first);
  CHECK(contents(second) == std::vector<std::uint64_t>{1, 2});
  CHECK(first.empty());  // NOLINT(bugprone-use-after-move): what moving leaves is the point
  first.insert(3);
  CHECK(contents(first) == std::vector<std::uint64_t>{3});
  second = std::move(first);
  CHECK(contents(second) == std::vector<std::uint64_t>{3});
}

TEST_CASE("a seq_deque's lower_bound is the index of the first seq not below the one asked", "[detail][seq_deque]") {
  seq_deque d;
  CHECK(d.lower_bound(1) == 0);  // empty
  for (std::uint64_t seq : {20, 40, 60}) d.insert(seq);
  d.erase(20);  // the ring's head moves: indexes still count from the lowest seq
  d.insert(80);
  CHECK(d.lower_bound(0) == 0);
  CHECK(d.lower_bound(40) == 0);
  CHECK(d.lower_bound(41) == 1);
  CHECK(d.lower_bound(80) == 2);
  CHECK(d.lower_bound(81) == d.size());
}
