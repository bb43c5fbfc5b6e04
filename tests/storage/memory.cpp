// outbox::memory_storage: the conformance suite, plus what is particular to keeping it in memory.
#include <outbox/outbox.hpp>
#include <outbox/testing/storage_conformance.hpp>

#include "support/stats_shape.hpp"

namespace {
struct memory_storage_factory {
  using storage_type = outbox::memory_storage;
  outbox::memory_storage make() { return {}; }
};
}  // namespace

OUTBOX_STORAGE_CONFORMANCE_TESTS(memory_storage_factory)
OUTBOX_ENTITY_STORAGE_CONFORMANCE_TESTS(memory_storage_factory)

TEST_CASE("a moved memory storage keeps its events", "[storage][memory]") {
  outbox::testing::storage_fixture f;
  outbox::memory_storage first;
  std::vector<outbox::event> batch = {f.make("alice", "k")};
  REQUIRE(outbox::testing::append_keeping(first, batch).has_value());
  outbox::memory_storage second = std::move(first);
  auto found = second.find(batch[0].id);
  REQUIRE(found.has_value());
  REQUIRE(found->has_value());
  CHECK((*found)->seq == batch[0].seq);
}

TEST_CASE("memory storage stats: stats(), stats(user) and stats(user, now)", "[storage][memory][stats]") {
  outbox::memory_storage s;
  outbox_test::check_stats_shape(s);
}
