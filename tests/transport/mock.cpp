// outbox::mock_transport: the scriptable, recording test double. Events are built by hand and
// handed to send() directly, the way the outbox would.

#include <catch2/catch.hpp>

#include <chrono>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <outbox/outbox.hpp>

namespace {

using namespace std::chrono_literals;
using kind = outbox::delivery_result::kind;
using outbox::delivery_result;
using outbox::mock_transport;

struct event_factory {
  outbox::event_id_generator ids{42};
  outbox::manual_clock clock{};

  outbox::event make(std::string type = "steps.saved", std::string entity = "steps-1", std::string user = "alice",
                     int attempt = 1) {
    outbox::event e;
    e.id = ids.next(clock.now());
    e.type = std::move(type);
    e.entity_id = std::move(entity);
    e.ordering_key = e.entity_id;
    e.user_id = std::move(user);
    e.payload = R"({"steps":1200})";
    e.status = outbox::status::processing;
    e.attempts = attempt;
    return e;
  }
};

/// Sends `batch` the way the outbox does: results pre-filled with "retryable: no result".
std::vector<delivery_result> send(mock_transport& transport, const std::vector<outbox::event>& batch) {
  std::vector<delivery_result> results(batch.size(), delivery_result::retryable("no result"));
  transport.send(std::span<const outbox::event>(batch), std::span<delivery_result>(results));
  return results;
}

delivery_result send_one(mock_transport& transport, const outbox::event& e) {
  return send(transport, std::vector<outbox::event>{e}).at(0);
}

}  // namespace

TEST_CASE("mock transport delivers everything by default with numbered remote ids", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  const auto first = send(transport, {f.make(), f.make(), f.make()});
  REQUIRE(first.size() == 3);
  for (const auto& r : first) {
    CHECK(r.outcome == kind::delivered);
    CHECK(r.error.empty());
  }
  CHECK(first[0].remote_id == "remote-1");
  CHECK(first[1].remote_id == "remote-2");
  CHECK(first[2].remote_id == "remote-3");

  // The numbering continues across send calls.
  const auto second = send(transport, {f.make()});
  CHECK(second[0].remote_id == "remote-4");
  CHECK(transport.calls() == 2);
}

TEST_CASE("mock transport overwrites every pre-filled result", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  transport.add_rule({.type = "weight.saved"}, delivery_result::permanent("bad unit"));
  const auto results = send(transport, {f.make("steps.saved"), f.make("weight.saved")});
  CHECK(results[0].outcome == kind::delivered);
  CHECK(results[1].outcome == kind::permanent);
  CHECK(results[1].error == "bad unit");
}

TEST_CASE("mock transport rule by type answers only events of that type", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  transport.add_rule({.type = "heart_rate.saved"}, delivery_result::retryable("503"));
  const auto results = send(transport, {f.make("steps.saved"), f.make("heart_rate.saved"), f.make("steps.saved")});
  CHECK(results[0].outcome == kind::delivered);
  CHECK(results[1].outcome == kind::retryable);
  CHECK(results[1].error == "503");
  CHECK(results[2].outcome == kind::delivered);
  // Rule answers do not use up remote ids.
  CHECK(results[0].remote_id == "remote-1");
  CHECK(results[2].remote_id == "remote-2");
}

TEST_CASE("mock transport rule by id answers only that event", "[mock_transport]") {
  event_factory f;
  const outbox::event target = f.make();
  const outbox::event other = f.make();
  mock_transport transport;
  transport.add_rule({.id = target.id}, delivery_result::permanent("rejected"));
  const auto results = send(transport, {other, target});
  CHECK(results[0].outcome == kind::delivered);
  CHECK(results[1].outcome == kind::permanent);
}

TEST_CASE("mock transport rule by entity answers only that entity's events", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  transport.add_rule({.entity_id = "weight-7"}, delivery_result::retryable("conflict"));
  const auto results = send(transport, {f.make("weight.saved", "weight-7"), f.make("weight.saved", "weight-8")});
  CHECK(results[0].outcome == kind::retryable);
  CHECK(results[1].outcome == kind::delivered);
}

TEST_CASE("mock transport rule by user answers only that user's events", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  transport.add_rule({.user_id = "bob"}, delivery_result::permanent("forbidden"));
  const auto results = send(transport, {f.make("steps.saved", "steps-1", "alice"), f.make("steps.saved", "steps-1", "bob")});
  CHECK(results[0].outcome == kind::delivered);
  CHECK(results[1].outcome == kind::permanent);
  CHECK(results[1].error == "forbidden");
}

TEST_CASE("mock transport rule by attempt answers only that attempt number", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  transport.add_rule({.attempt = 1}, delivery_result::retryable("first try fails"));
  outbox::event e = f.make();
  e.attempts = 1;
  CHECK(send_one(transport, e).outcome == kind::retryable);
  e.attempts = 2;
  CHECK(send_one(transport, e).outcome == kind::delivered);
  e.attempts = 1;
  CHECK(send_one(transport, e).outcome == kind::retryable);  // an unlimited rule keeps answering
}

TEST_CASE("mock transport rule by call answers only events of that send call", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  transport.add_rule({.call = 2}, delivery_result::retryable("second call fails"));
  const auto first = send(transport, {f.make(), f.make()});
  const auto second = send(transport, {f.make(), f.make()});
  const auto third = send(transport, {f.make()});
  CHECK(first[0].outcome == kind::delivered);
  CHECK(first[1].outcome == kind::delivered);
  CHECK(second[0].outcome == kind::retryable);
  CHECK(second[1].outcome == kind::retryable);
  CHECK(third[0].outcome == kind::delivered);
}

TEST_CASE("mock transport rule needs every field it sets to match", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  transport.add_rule({.type = "steps.saved", .user_id = "bob"}, delivery_result::permanent("no"));
  const auto results = send(transport, {f.make("steps.saved", "s", "alice"), f.make("weight.saved", "w", "bob"),
                                        f.make("steps.saved", "s", "bob")});
  CHECK(results[0].outcome == kind::delivered);
  CHECK(results[1].outcome == kind::delivered);
  CHECK(results[2].outcome == kind::permanent);
}

TEST_CASE("mock transport rule with a times limit answers that often, then events are delivered",
          "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  transport.add_rule({.type = "steps.saved"}, delivery_result::retryable("flaky"), 2);
  const auto results = send(transport, {f.make(), f.make(), f.make(), f.make()});
  CHECK(results[0].outcome == kind::retryable);
  CHECK(results[1].outcome == kind::retryable);
  CHECK(results[2].outcome == kind::delivered);
  CHECK(results[3].outcome == kind::delivered);
  CHECK(results[2].remote_id == "remote-1");
  // The limit is spent for good, also in later calls.
  CHECK(send_one(transport, f.make()).outcome == kind::delivered);
}

TEST_CASE("mock transport rule that does not match does not use up its times", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  transport.add_rule({.type = "weight.saved"}, delivery_result::retryable("flaky"), 1);
  CHECK(send_one(transport, f.make("steps.saved")).outcome == kind::delivered);
  CHECK(send_one(transport, f.make("weight.saved")).outcome == kind::retryable);
  CHECK(send_one(transport, f.make("weight.saved")).outcome == kind::delivered);
}

TEST_CASE("mock transport rule with zero times never answers", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  transport.add_rule({}, delivery_result::permanent("never"), 0);
  CHECK(send_one(transport, f.make()).outcome == kind::delivered);
}

TEST_CASE("mock transport rule passes the server's retry-after hint through", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  transport.add_rule({}, delivery_result::retryable("429", 90s));
  const delivery_result r = send_one(transport, f.make());
  CHECK(r.outcome == kind::retryable);
  REQUIRE(r.retry_after.has_value());
  CHECK(*r.retry_after == 90s);
}

TEST_CASE("mock transport tries rules in the order they were added", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  transport.add_rule({.type = "steps.saved"}, delivery_result::retryable("first rule"), 1)
      .add_rule({}, delivery_result::permanent("second rule"), 1);
  // Both match the first event; the first-added answers. Then only the second is live.
  CHECK(send_one(transport, f.make()).error == "first rule");
  CHECK(send_one(transport, f.make()).error == "second rule");
  CHECK(send_one(transport, f.make()).outcome == kind::delivered);
}

TEST_CASE("mock transport earlier catch-all rule shadows a later specific one", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  transport.add_rule({}, delivery_result::retryable("catch-all"));
  transport.add_rule({.type = "steps.saved"}, delivery_result::permanent("specific"));
  CHECK(send_one(transport, f.make()).error == "catch-all");
}

TEST_CASE("mock transport consults the script before the rules", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  transport.add_rule({}, delivery_result::retryable("rule"), 1);
  transport.set_script([](const outbox::event& e, std::size_t) -> std::optional<delivery_result> {
    if (e.type == "weight.saved") return delivery_result::permanent("script");
    return std::nullopt;
  });
  CHECK(send_one(transport, f.make("weight.saved")).error == "script");
  // The script answered, so the limited rule is still live for the next event.
  CHECK(send_one(transport, f.make("steps.saved")).error == "rule");
  CHECK(send_one(transport, f.make("steps.saved")).outcome == kind::delivered);
}

TEST_CASE("mock transport script returning nullopt falls through to default delivery", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  int consulted = 0;
  transport.set_script([&](const outbox::event&, std::size_t) -> std::optional<delivery_result> {
    ++consulted;
    return std::nullopt;
  });
  const auto results = send(transport, {f.make(), f.make()});
  CHECK(consulted == 2);
  CHECK(results[0].outcome == kind::delivered);
  CHECK(results[0].remote_id == "remote-1");
  CHECK(results[1].remote_id == "remote-2");
}

TEST_CASE("mock transport script sees each event and the 1-based call number", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  std::vector<std::pair<outbox::event_id, std::size_t>> seen;
  transport.set_script([&](const outbox::event& e, std::size_t call) -> std::optional<delivery_result> {
    seen.emplace_back(e.id, call);
    return std::nullopt;
  });
  const outbox::event a = f.make();
  const outbox::event b = f.make();
  const outbox::event c = f.make();
  (void)send(transport, {a, b});
  (void)send(transport, {c});
  REQUIRE(seen.size() == 3);
  CHECK(seen[0] == std::pair(a.id, std::size_t{1}));
  CHECK(seen[1] == std::pair(b.id, std::size_t{1}));
  CHECK(seen[2] == std::pair(c.id, std::size_t{2}));
}

TEST_CASE("mock transport answers unavailable while offline, then delivers again", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  transport.set_offline(true);
  const auto offline = send(transport, {f.make(), f.make()});
  CHECK(offline[0].outcome == kind::unavailable);
  CHECK(offline[1].outcome == kind::unavailable);
  CHECK_FALSE(offline[0].error.empty());
  CHECK(transport.accepted_count() == 0);

  transport.set_offline(false);
  const delivery_result online = send_one(transport, f.make());
  CHECK(online.outcome == kind::delivered);
  CHECK(online.remote_id == "remote-1");
}

TEST_CASE("mock transport offline overrides scripts and rules without using them up", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  int consulted = 0;
  transport.set_script([&](const outbox::event&, std::size_t) -> std::optional<delivery_result> {
    ++consulted;
    return std::nullopt;
  });
  transport.add_rule({}, delivery_result::permanent("rule"), 1);
  transport.set_offline(true);
  CHECK(send_one(transport, f.make()).outcome == kind::unavailable);
  CHECK(consulted == 0);
  transport.set_offline(false);
  CHECK(send_one(transport, f.make()).error == "rule");
}

TEST_CASE("mock transport records every event it was handed with attempt, call and outcome",
          "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  transport.add_rule({.attempt = 1}, delivery_result::retryable("first try"));
  outbox::event a = f.make("steps.saved", "steps-1", "alice", 1);
  a.ordering_key = "alice/steps";
  const outbox::event b = f.make("weight.saved", "weight-1", "bob", 3);
  (void)send(transport, {a, b});
  a.attempts = 2;
  (void)send(transport, {a});

  const auto deliveries = transport.deliveries();
  REQUIRE(deliveries.size() == 3);
  CHECK(deliveries[0].id == a.id);
  CHECK(deliveries[0].type == "steps.saved");
  CHECK(deliveries[0].entity_id == "steps-1");
  CHECK(deliveries[0].ordering_key == "alice/steps");
  CHECK(deliveries[0].user_id == "alice");
  CHECK(deliveries[0].payload == a.payload);
  CHECK(deliveries[0].attempt == 1);
  CHECK(deliveries[0].call == 1);
  CHECK(deliveries[0].outcome == kind::retryable);

  CHECK(deliveries[1].id == b.id);
  CHECK(deliveries[1].user_id == "bob");
  CHECK(deliveries[1].attempt == 3);
  CHECK(deliveries[1].call == 1);
  CHECK(deliveries[1].outcome == kind::delivered);

  CHECK(deliveries[2].id == a.id);
  CHECK(deliveries[2].attempt == 2);
  CHECK(deliveries[2].call == 2);
  CHECK(deliveries[2].outcome == kind::delivered);
}

TEST_CASE("mock transport records offline answers as unavailable deliveries", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  transport.set_offline(true);
  (void)send_one(transport, f.make());
  const auto deliveries = transport.deliveries();
  REQUIRE(deliveries.size() == 1);
  CHECK(deliveries[0].outcome == kind::unavailable);
  CHECK(transport.accepted().empty());
}

TEST_CASE("mock transport accepted lists only delivered events, in acceptance order", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  const outbox::event a = f.make("a.saved");
  const outbox::event b = f.make("b.saved");
  const outbox::event c = f.make("c.saved");
  transport.add_rule({.id = b.id}, delivery_result::retryable("later"), 1);
  (void)send(transport, {a, b});
  (void)send(transport, {c, b});
  const auto accepted = transport.accepted();
  REQUIRE(accepted.size() == 3);
  CHECK(accepted[0].id == a.id);
  CHECK(accepted[1].id == c.id);
  CHECK(accepted[2].id == b.id);
  CHECK(transport.accepted_count() == 3);
}

TEST_CASE("mock transport counts acceptances per event id", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  const outbox::event once = f.make();
  const outbox::event twice = f.make();
  const outbox::event rejected = f.make();
  const outbox::event never_sent = f.make();
  transport.add_rule({.id = rejected.id}, delivery_result::permanent("no"));
  (void)send(transport, {once, twice, rejected});
  (void)send(transport, {twice, rejected});
  CHECK(transport.accepted_count(once.id) == 1);
  CHECK(transport.accepted_count(twice.id) == 2);
  CHECK(transport.accepted_count(rejected.id) == 0);
  CHECK(transport.accepted_count(never_sent.id) == 0);
}

TEST_CASE("mock transport duplicates counts acceptances beyond the first of each id", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  const outbox::event a = f.make();
  const outbox::event b = f.make();
  const outbox::event c = f.make();
  (void)send(transport, {a, b, c});
  CHECK(transport.duplicates() == 0);
  (void)send(transport, {a});
  CHECK(transport.duplicates() == 1);
  (void)send(transport, {a, b});
  CHECK(transport.duplicates() == 3);
}

TEST_CASE("mock transport duplicates ignores failed attempts before an acceptance", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  const outbox::event e = f.make();
  transport.add_rule({.id = e.id}, delivery_result::retryable("503"), 2);
  (void)send_one(transport, e);
  (void)send_one(transport, e);
  (void)send_one(transport, e);
  CHECK(transport.deliveries().size() == 3);
  CHECK(transport.accepted_count(e.id) == 1);
  CHECK(transport.duplicates() == 0);
}

TEST_CASE("mock transport copies share rules, switches and records", "[mock_transport]") {
  event_factory f;
  mock_transport kept;
  mock_transport given = kept;  // e.g. moved into an outbox while the test keeps `kept`

  kept.add_rule({.type = "weight.saved"}, delivery_result::permanent("shared rule"));
  CHECK(send_one(given, f.make("weight.saved")).error == "shared rule");
  CHECK(send_one(given, f.make("steps.saved")).remote_id == "remote-1");

  CHECK(kept.calls() == 2);
  CHECK(kept.deliveries().size() == 2);
  CHECK(kept.accepted_count() == 1);

  kept.set_offline(true);
  CHECK(send_one(given, f.make()).outcome == kind::unavailable);
  kept.set_offline(false);

  // Remote ids come from one shared counter.
  CHECK(send_one(kept, f.make()).remote_id == "remote-2");
  CHECK(send_one(given, f.make()).remote_id == "remote-3");
}

TEST_CASE("mock transport on_send hook sees each batch before it is answered", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  std::vector<std::vector<outbox::event_id>> batches;
  std::vector<std::size_t> recorded_before;
  transport.set_on_send([&](std::span<const outbox::event> batch) {
    std::vector<outbox::event_id> ids;
    for (const auto& e : batch) ids.push_back(e.id);
    batches.push_back(ids);
    // Runs outside the mock's lock: the hook may query the mock.
    recorded_before.push_back(transport.deliveries().size());
  });
  const outbox::event a = f.make();
  const outbox::event b = f.make();
  const outbox::event c = f.make();
  (void)send(transport, {a, b});
  (void)send(transport, {c});
  REQUIRE(batches.size() == 2);
  CHECK(batches[0] == std::vector<outbox::event_id>{a.id, b.id});
  CHECK(batches[1] == std::vector<outbox::event_id>{c.id});
  CHECK(recorded_before == std::vector<std::size_t>{0, 2});
}

TEST_CASE("mock transport latency makes each send take at least that long", "[mock_transport]") {
  event_factory f;
  mock_transport transport;
  transport.set_latency(20ms);
  const auto start = std::chrono::steady_clock::now();
  CHECK(send_one(transport, f.make()).outcome == kind::delivered);
  CHECK(std::chrono::steady_clock::now() - start >= 20ms);
}
