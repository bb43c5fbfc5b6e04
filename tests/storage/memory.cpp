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

namespace {
std::vector<std::uint64_t> seqs_where(outbox::memory_storage& s, outbox::event_query q) {
  auto page = s.query(q);
  REQUIRE(page.has_value());
  std::vector<std::uint64_t> seqs;
  for (const outbox::event& e : *page) seqs.push_back(e.seq);
  return seqs;
}
std::vector<std::uint64_t> by_type(outbox::memory_storage& s, std::string type) {
  outbox::event_query q;
  q.type = std::move(type);
  return seqs_where(s, q);
}
std::vector<std::uint64_t> by_entity(outbox::memory_storage& s, std::string entity) {
  outbox::event_query q;
  q.entity_id = std::move(entity);
  return seqs_where(s, q);
}
}  // namespace

// The indexes by entity id and type are built by the first query on either field: what changed
// before must show in them as much as what changes after.
TEST_CASE("memory storage: queries by entity id and type see changes from before and after the first one",
          "[storage][memory][query]") {
  outbox::testing::storage_fixture f;
  outbox::memory_storage s;
  auto a = f.make_entity_change("steps", "a", "alice");
  auto b = f.make_entity_change("steps", "b", "alice");
  auto c = f.make_entity_change("steps", "c", "alice");
  for (auto* change : {&a, &b, &c}) REQUIRE(s.commit(*change).has_value());
  auto row = [&](const std::string& id) {
    auto found = s.find_entity("steps", id);
    REQUIRE(found.has_value());
    REQUIRE(found->has_value());
    return **found;
  };
  auto seq_of = [&](outbox::event_id id) {
    auto found = s.find(id);
    REQUIRE(found.has_value());
    REQUIRE(found->has_value());
    return (*found)->seq;
  };
  const std::uint64_t seq_b = seq_of(b.event.id), seq_c = seq_of(c.event.id);

  // Before any query by those fields: a's event dropped with its row, b's event retyped.
  REQUIRE(s.commit(outbox::testing::storage_fixture::make_drop(row("a"), a.event.id)).has_value());
  auto retype = f.make_replace(row("b"), b.event.id);
  retype.event.type = "steps.retyped";
  REQUIRE(s.commit(retype).has_value());

  CHECK(by_type(s, "steps.created") == std::vector<std::uint64_t>{seq_c});
  CHECK(by_type(s, "steps.retyped") == std::vector<std::uint64_t>{seq_b});
  CHECK(by_entity(s, "a").empty());
  CHECK(by_entity(s, "b") == std::vector<std::uint64_t>{seq_b});

  // After it: kept up with appends, retypes and drops.
  auto d = f.make_entity_change("steps", "d", "alice");
  REQUIRE(s.commit(d).has_value());
  const std::uint64_t seq_d = seq_of(d.event.id);
  auto retype_c = f.make_replace(row("c"), c.event.id);
  retype_c.event.type = "steps.retyped";
  REQUIRE(s.commit(retype_c).has_value());
  REQUIRE(s.commit(outbox::testing::storage_fixture::make_drop(row("b"), b.event.id)).has_value());
  CHECK(by_type(s, "steps.created") == std::vector<std::uint64_t>{seq_d});
  CHECK(by_type(s, "steps.retyped") == std::vector<std::uint64_t>{seq_c});
  CHECK(by_entity(s, "b").empty());
  CHECK(by_entity(s, "d") == std::vector<std::uint64_t>{seq_d});
}
