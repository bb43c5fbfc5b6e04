// Claim order as the backend sees it: priority first, then append order; per-key FIFO that
// survives a retry of the key's head without holding back other keys.
#include <catch2/catch.hpp>

#include "support/fixture.hpp"

using namespace outbox_test;
using outbox::delivery_result;

namespace {
std::vector<std::string> accepted_entities(const outbox::mock_transport& backend) {
  std::vector<std::string> out;
  for (const auto& d : backend.accepted()) out.push_back(d.entity_id);
  return out;
}
}  // namespace

TEST_CASE("higher priority is delivered first, then append order", "[outbox][ordering]") {
  outbox::options options;
  options.batch_size = 2;
  fixture f(options);
  f.box.set_user("alice");
  f.enqueue("low-1", {}, outbox::priority::low);
  f.enqueue("normal-1");
  f.enqueue("high-1", {}, outbox::priority::high);
  f.enqueue("normal-2");
  f.enqueue("high-2", {}, outbox::priority::high);
  while (f.box.process_once().claimed > 0) {
  }
  CHECK(accepted_entities(f.backend) ==
        std::vector<std::string>{"high-1", "high-2", "normal-1", "normal-2", "low-1"});
}

TEST_CASE("a key's order survives a retry of its head; other keys are not blocked", "[outbox][ordering]") {
  fixture f;
  f.box.set_user("alice");
  std::vector<outbox::event_id> k;
  for (int i = 0; i < 3; ++i) {
    k.push_back(f.box.enqueue({.type = "edit", .entity_id = "profile", .payload = std::to_string(i)}).value());
  }
  f.enqueue("other-1");
  f.backend.add_rule({.id = k[0]}, delivery_result::retryable("timeout"), 1);

  auto first = f.box.process_once();
  CHECK(first.retried == 1);    // the head of "profile" failed
  CHECK(first.delivered == 1);  // "other-1" went through in the same batch
  f.enqueue("other-2");
  CHECK(f.box.process_once().delivered == 1);  // other keys keep flowing while "profile" waits
  CHECK(f.backend.accepted_count(k[1]) == 0);  // the head's successors wait for it

  f.clock.advance(30s);
  for (int i = 0; i < 3; ++i) CHECK(f.box.process_once().delivered == 1);  // one per cycle: one in flight per key
  std::vector<std::string> payloads;
  for (const auto& d : f.backend.accepted())
    if (d.entity_id == "profile") payloads.push_back(d.payload);
  CHECK(payloads == std::vector<std::string>{"0", "1", "2"});
  CHECK(f.backend.duplicates() == 0);
}

TEST_CASE("an explicit ordering key orders events of different entities", "[outbox][ordering]") {
  fixture f;
  f.box.set_user("alice");
  const auto a = f.box.enqueue({.type = "t", .entity_id = "a", .payload = "{}", .ordering_key = "shared"}).value();
  REQUIRE(f.box.enqueue({.type = "t", .entity_id = "b", .payload = "{}", .ordering_key = "shared"}).has_value());
  f.backend.add_rule({.id = a}, delivery_result::retryable("500"), 1);
  CHECK(f.box.process_once().claimed == 1);  // "b" waits behind "a" though it is another entity
  CHECK(f.box.process_once().claimed == 0);
  f.clock.advance(30s);
  CHECK(f.box.process_once().delivered == 1);
  CHECK(f.box.process_once().delivered == 1);
  CHECK(accepted_entities(f.backend) == std::vector<std::string>{"a", "b"});
}
