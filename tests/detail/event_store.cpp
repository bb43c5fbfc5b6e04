// outbox::detail::event_store: the memory state's events, found by seq, kept at one address.

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include <outbox/detail/event_store.hpp>

namespace {

using outbox::detail::event_store;

outbox::event make(std::uint64_t seq, std::string type = "t") {
  outbox::event e;
  e.seq = seq;
  e.type = std::move(type);
  return e;
}

std::vector<std::uint64_t> seqs_of(const event_store& store, std::uint64_t after = 0) {
  std::vector<std::uint64_t> out;
  for (auto it = store.upper_bound(after); it != store.end(); ++it) out.push_back(it->seq);
  return out;
}

}  // namespace

TEST_CASE("an event_store finds events by seq and visits them in seq order", "[detail][event_store]") {
  event_store store;
  CHECK(store.empty());
  CHECK(store.begin() == store.end());
  // Across blocks (256 seqs each), with gaps, inserted out of order.
  for (std::uint64_t seq : {700u, 1u, 255u, 256u, 2u, 100000u}) store.put(make(seq));
  CHECK(store.size() == 6);
  CHECK(seqs_of(store) == std::vector<std::uint64_t>{1, 2, 255, 256, 700, 100000});
  CHECK(seqs_of(store, 2) == std::vector<std::uint64_t>{255, 256, 700, 100000});
  CHECK(seqs_of(store, 255) == std::vector<std::uint64_t>{256, 700, 100000});
  CHECK(seqs_of(store, 300) == std::vector<std::uint64_t>{700, 100000});
  CHECK(seqs_of(store, 100000).empty());
  CHECK(seqs_of(store, UINT64_MAX).empty());
  REQUIRE(store.find(255) != nullptr);
  CHECK(store.find(255)->seq == 255);
  CHECK(store.find(3) == nullptr);
  CHECK(store.find(5000) == nullptr);
  CHECK_FALSE(store.contains(257));
  const event_store& view = store;
  CHECK(view.find(700) == &store.at(700));
}

TEST_CASE("an event_store keeps an event at its address until it is erased", "[detail][event_store]") {
  event_store store;
  outbox::event* first = &store.put(make(10, "before"));
  for (std::uint64_t seq = 11; seq < 5000; ++seq) store.put(make(seq));  // many blocks later
  CHECK(&store.at(10) == first);
  // Putting an event under a stored seq replaces it in place.
  outbox::event* replaced = &store.put(make(10, "after"));
  CHECK(replaced == first);
  CHECK(first->type == "after");
  CHECK(store.size() == 4990);
  store.erase(10);
  CHECK(store.find(10) == nullptr);
  CHECK(store.size() == 4989);
  store.erase(10);  // not there: nothing happens
  store.erase(999999);
  CHECK(store.size() == 4989);
}

TEST_CASE("an event_store lets go of a block with its last event, and starts afresh", "[detail][event_store]") {
  event_store store;
  for (std::uint64_t seq = 1; seq <= 600; ++seq) store.put(make(seq));
  for (std::uint64_t seq = 1; seq <= 600; ++seq)
    if (seq != 300) store.erase(seq);
  CHECK(seqs_of(store) == std::vector<std::uint64_t>{300});
  store.erase(300);
  CHECK(store.empty());
  CHECK(store.begin() == store.end());
  store.put(make(300, "again"));
  REQUIRE(store.find(300) != nullptr);
  CHECK(store.find(300)->type == "again");

  event_store moved = std::move(store);
  CHECK(store.empty());  // NOLINT(bugprone-use-after-move): a moved-from store is empty
  CHECK(seqs_of(moved) == std::vector<std::uint64_t>{300});
  store.put(make(1));
  CHECK(seqs_of(store) == std::vector<std::uint64_t>{1});
}
