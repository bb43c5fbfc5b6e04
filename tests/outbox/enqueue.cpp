// Outbox::enqueue: what a producer gets back, and what is refused without touching the store.
#include <catch2/catch.hpp>

#include <array>
#include <span>
#include <type_traits>
#include <vector>

#include "support/fixture.hpp"

using namespace outbox_test;
using outbox::errc;
using outbox::status;

TEST_CASE("enqueue stores a pending event with the outbox's defaults", "[outbox][enqueue]") {
  fixture f;
  f.box.set_user("alice");
  const auto id = f.enqueue("steps-10h");
  const auto e = f.get(id);
  CHECK(e.status == status::pending);
  CHECK(e.type == "test.saved");
  CHECK(e.entity_id == "steps-10h");
  CHECK(e.ordering_key == "steps-10h");  // defaults to the entity id
  CHECK(e.user_id == "alice");           // defaults to the active user
  CHECK(e.max_attempts == 5);
  CHECK(e.attempts == 0);
  CHECK(e.created_at == f.t0);
  CHECK(e.id.unix_millis() == static_cast<std::uint64_t>(
                                  std::chrono::duration_cast<std::chrono::milliseconds>(f.t0.time_since_epoch()).count()));
}

TEST_CASE("enqueue takes an explicit user, key, priority and attempt limit", "[outbox][enqueue]") {
  fixture f;  // no session: an explicit user is enough
  const auto id = f.box.enqueue({.type = "weight.saved", .entity_id = "w1", .payload = R"({"kg":70})",
                                 .user_id = "bob", .ordering_key = "bob-weights", .priority = 7,
                                 .max_attempts = 2}).value();
  const auto e = f.get(id);
  CHECK(e.user_id == "bob");
  CHECK(e.ordering_key == "bob-weights");
  CHECK(e.priority == 7);
  CHECK(e.max_attempts == 2);
  CHECK(e.payload == R"({"kg":70})");
}

TEST_CASE("ids increase in enqueue order", "[outbox][enqueue]") {
  fixture f;
  f.box.set_user("alice");
  outbox::event_id last{};
  for (int i = 0; i < 1000; ++i) {
    const auto id = f.enqueue("e" + std::to_string(i));
    CHECK(last < id);
    last = id;
  }
}

TEST_CASE("an event without a user and without a session is refused", "[outbox][enqueue]") {
  fixture f;
  auto refused = f.box.enqueue({.type = "x", .entity_id = "e", .payload = "{}"});
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error() == errc::no_active_user);
  CHECK(f.box.stats().value().total() == 0);
}

TEST_CASE("an oversized payload is refused and what was stored stays", "[outbox][enqueue]") {
  outbox::options options;
  options.max_payload_bytes = 16;
  fixture f(options);
  f.box.set_user("alice");
  const auto kept = f.enqueue("e1");
  auto refused = f.box.enqueue({.type = "x", .entity_id = "e2", .payload = std::string(17, 'x')});
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error() == errc::payload_too_large);
  CHECK_THAT(refused.error().message, Catch::Contains("17 bytes"));
  CHECK(f.box.stats().value().total() == 1);
  CHECK(f.get(kept).status == status::pending);
  CHECK(f.box.enqueue({.type = "x", .entity_id = "e3", .payload = std::string(16, 'x')}).has_value());
}

TEST_CASE("an event needs a type", "[outbox][enqueue]") {
  fixture f;
  f.box.set_user("alice");
  auto refused = f.box.enqueue({.type = "", .entity_id = "e", .payload = "{}"});
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error() == errc::invalid_argument);
}

TEST_CASE("enqueue({}) is one empty event, refused for its missing type", "[outbox][enqueue]") {
  fixture f;
  f.box.set_user("alice");
  // A braced list always means one event; a batch is a range (span, vector, array) of them.
  static_assert(std::is_same_v<decltype(f.box.enqueue({})), outbox::result<outbox::event_id>>);
  auto refused = f.box.enqueue({});
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error() == errc::invalid_argument);
  CHECK(f.box.stats().value().total() == 0);
}

TEST_CASE("a batch enqueue takes a vector, an array or a span", "[outbox][enqueue]") {
  fixture f;
  f.box.set_user("alice");
  const std::vector<outbox::new_event> vector = {{.type = "a", .entity_id = "1", .payload = "{}"}};
  const std::array<outbox::new_event, 2> array = {outbox::new_event{.type = "b", .entity_id = "2", .payload = "{}"},
                                                  outbox::new_event{.type = "c", .entity_id = "3", .payload = "{}"}};
  CHECK(f.box.enqueue(vector).value().size() == 1);
  CHECK(f.box.enqueue(array).value().size() == 2);
  CHECK(f.box.enqueue(std::span<const outbox::new_event>()).value().empty());  // nothing to store
  CHECK(f.box.stats().value().total() == 3);
}

TEST_CASE("a batch enqueue returns the ids its events are stored under, increasing", "[outbox][enqueue]") {
  fixture f;
  f.box.set_user("alice");
  const auto before = f.enqueue("e0");
  // Without an entity or a key, each event is a line of its own, named by its id.
  const std::vector<outbox::new_event> batch(300, outbox::new_event{.type = "a", .payload = "{}"});
  const std::vector<outbox::event_id> ids = f.box.enqueue(batch).value();
  REQUIRE(ids.size() == batch.size());
  outbox::event_id last = before;
  for (const auto& id : ids) {
    CHECK(last < id);
    const auto e = f.get(id);
    CHECK(e.id == id);
    CHECK(e.ordering_key == id.to_string());
    last = id;
  }
  CHECK(last < f.enqueue("e1"));
}

TEST_CASE("a batch enqueue stores all its events or none", "[outbox][enqueue]") {
  fixture f;
  f.box.set_user("alice");
  std::vector<outbox::new_event> good = {{.type = "a", .entity_id = "1", .payload = "{}"},
                                         {.type = "b", .entity_id = "2", .payload = "{}"}};
  auto ids = f.box.enqueue(std::span<const outbox::new_event>(good));
  REQUIRE(ids.has_value());
  REQUIRE(ids->size() == 2);
  CHECK(f.get((*ids)[0]).seq < f.get((*ids)[1]).seq);

  std::vector<outbox::new_event> bad = {{.type = "a", .entity_id = "3", .payload = "{}"},
                                        {.type = "", .entity_id = "4", .payload = "{}"}};
  CHECK_FALSE(f.box.enqueue(std::span<const outbox::new_event>(bad)).has_value());
  CHECK(f.box.stats().value().total() == 2);
}

TEST_CASE("a failed storage write loses nothing stored before", "[outbox][enqueue]") {
  faulty_fixture f;
  f.box.set_user("alice");
  const auto kept = f.enqueue("e1");
  f.box.storage().fail(outbox::testing::storage_op::append, 1, errc::disk_full);
  auto refused = f.box.enqueue({.type = "x", .entity_id = "e2", .payload = "{}"});
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error() == errc::disk_full);
  CHECK(f.box.stats().value().total() == 1);
  CHECK(f.get(kept).status == status::pending);
}

TEST_CASE("events without an entity or key are ordered against nothing", "[outbox][enqueue]") {
  fixture f;
  f.box.set_user("alice");
  const auto a = f.box.enqueue({.type = "ping", .entity_id = "", .payload = "{}"}).value();
  const auto b = f.box.enqueue({.type = "ping", .entity_id = "", .payload = "{}"}).value();
  CHECK(f.get(a).ordering_key != f.get(b).ordering_key);
  CHECK(f.box.process_once().claimed == 2);  // both in one batch: neither waits for the other
}

TEST_CASE("invalid options are refused at construction", "[outbox][enqueue]") {
  auto construct = [](auto mutate) {
    outbox::options options;
    mutate(options);
    outbox::test_outbox box(outbox::memory_storage(), outbox::mock_transport(), outbox::manual_clock(),
                            outbox::exponential_backoff(), options);
  };
  auto code_of = [&](auto mutate) -> std::error_code {
    try {
      construct(mutate);
    } catch (const outbox::exception& e) {
      return e.code();
    }
    return {};
  };
  CHECK(code_of([](auto& o) { o.batch_size = 0; }) == errc::invalid_argument);
  CHECK(code_of([](auto& o) { o.poll_interval = outbox::duration::zero(); }) == errc::invalid_argument);
  CHECK(code_of([](auto& o) { o.lease = -1s; }) == errc::invalid_argument);
  CHECK(code_of([](auto& o) { o.max_attempts = 0; }) == errc::invalid_argument);
  CHECK(code_of([](auto& o) { o.max_payload_bytes = 0; }) == errc::invalid_argument);
  CHECK_FALSE(code_of([](auto&) {}));
}
