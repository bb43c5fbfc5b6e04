// entity_traits: defaults read from members, ADL serialisers, and a specialisation for a type
// the user cannot change.
#include <catch2/catch.hpp>

#include "support/entities.hpp"

namespace app {
/// Serialised by free functions found through ADL, with an optional priority.
struct heart_rate {
  static constexpr std::string_view collection = "heart_rate";
  std::string id;
  std::string user_id;
  int bpm = 0;
  [[nodiscard]] int priority() const { return bpm > 180 ? outbox::priority::high : outbox::priority::normal; }
};
inline std::string to_payload(const heart_rate& h) { return h.user_id + "|" + std::to_string(h.bpm); }
inline void from_payload(std::string_view text, heart_rate& h) {
  const auto p = outbox_test::split(text, '|');
  h.user_id = p.at(0);
  h.bpm = outbox_test::to_int(p.at(1));
}

/// A type from elsewhere: an integer id, an owner under another name, no serialiser.
struct legacy_profile {
  long number = 0;
  std::string owner;
  std::string name;
};
}  // namespace app

template <>
struct outbox::entity_traits<app::legacy_profile> {
  static std::string id(const app::legacy_profile& p) { return p.number ? std::to_string(p.number) : std::string(); }
  static void set_id(app::legacy_profile& p, const std::string& id) { p.number = id.empty() ? 0 : std::stol(id); }
  static std::string user_id(const app::legacy_profile& p) { return p.owner; }
  static constexpr std::string_view collection() { return "profile"; }
  static std::string serialize(const app::legacy_profile& p) { return p.owner + "|" + p.name; }
  static app::legacy_profile deserialize(std::string_view text) {
    const auto parts = outbox_test::split(text, '|');
    return {0, parts.at(0), parts.at(1)};
  }
  static std::optional<std::string> natural_key(const app::legacy_profile&) { return std::nullopt; }
  static std::optional<outbox::timestamp> occurred_at(const app::legacy_profile&) { return std::nullopt; }
  static int priority(const app::legacy_profile&) { return outbox::priority::low; }
  static std::string ordering_key(const app::legacy_profile& p) { return "profile-of-" + p.owner; }
  static std::string created_type() { return "ProfileCreated"; }
  static std::string updated_type() { return "ProfileChanged"; }
  static std::string deleted_type() { return "ProfileDeleted"; }
};

struct no_serialiser {
  static constexpr std::string_view collection = "x";
  std::string id, user_id;
};
static_assert(outbox::entity_with_id<no_serialiser>);
static_assert(outbox::entity_with_owner<no_serialiser>);
static_assert(!outbox::serializable_entity<no_serialiser>);
static_assert(outbox::serializable_entity<app::heart_rate>);
static_assert(outbox::serializable_entity<app::legacy_profile>);
static_assert(!outbox::entity_with_id<app::legacy_profile, struct no_traits>);

using namespace outbox_test;

TEST_CASE("ADL serialisers and a priority member are picked up", "[repository][traits]") {
  repo_fixture<outbox::memory_storage> f;
  outbox::Repository<app::heart_rate, outbox::memory_storage, outbox::coalesce_unsent, outbox::manual_clock> rates(f.box);
  const auto calm = rates.save({.id = "h1", .user_id = "alice", .bpm = 60}).value();
  const auto alarm = rates.save({.id = "h2", .user_id = "alice", .bpm = 190}).value();
  CHECK(f.get(calm.event).payload == "alice|60");
  CHECK(f.get(alarm.event).priority == outbox::priority::high);
  CHECK(rates.find("h2").value()->entity.bpm == 190);
  f.box.set_user("alice");
  f.box.process_once();
  CHECK(f.backend.accepted().front().entity_id == "h2");  // the alarm went first
}

TEST_CASE("a specialised entity_traits maps a type the user cannot change", "[repository][traits]") {
  repo_fixture<outbox::memory_storage> f;
  outbox::Repository<app::legacy_profile, outbox::memory_storage, outbox::never_coalesce, outbox::manual_clock> profiles(
      f.box);
  const auto saved = profiles.save({.number = 7, .owner = "alice", .name = "Alice"}).value();
  CHECK(saved.id == "7");
  const auto e = f.get(saved.event);
  CHECK(e.type == "ProfileCreated");
  CHECK(e.ordering_key == "profile-of-alice");
  CHECK(e.priority == outbox::priority::low);
  const auto found = profiles.find("7").value().value();
  CHECK(found.entity.number == 7);
  CHECK(found.entity.name == "Alice");
  REQUIRE(profiles.save({.number = 7, .owner = "alice", .name = "Alice B."}).has_value());
  CHECK(f.events().back().type == "ProfileChanged");
}
