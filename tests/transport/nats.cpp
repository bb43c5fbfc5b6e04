// outbox::nats_transport against real nats-servers this binary starts (JetStream on, a private
// store directory, 127.0.0.1, an ephemeral port) and stops again, also when a test fails.
#include <outbox/outbox.hpp>
#include <outbox/storage/sqlite.hpp>
#include <outbox/transport/nats.hpp>

#include <catch2/catch.hpp>

#include <poll.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "support/fixture.hpp"
#include "support/nats_server.hpp"
#ifdef OUTBOX_TEST_WITH_OPENSSL
#include "support/self_signed.hpp"
#endif
#include "support/temp_sqlite.hpp"

namespace {

using namespace std::chrono_literals;
using outbox_test::eventually;

const std::string stream_name = "OUTBOX";

/// Without the server these tests are skipped, said once.
bool have_nats_server() {
  static const bool available = [] {
    const bool found = outbox_test::nats_server_available();
    if (!found)
      std::printf("outbox_nats_tests: %s not found, NATS tests skipped (Debian: apt-get install nats-server)\n",
                  outbox_test::nats_server_binary().c_str());
    return found;
  }();
  return available;
}

#define OUTBOX_REQUIRE_NATS_SERVER() \
  do {                               \
    if (!have_nats_server()) {       \
      SUCCEED("no nats-server");     \
      return;                        \
    }                                \
  } while (false)

/// A server with the stream "OUTBOX" capturing outbox.>.
struct jetstream {
  outbox_test::nats_server server;
  outbox_test::stream_admin admin{server.url()};
  jetstream() { admin.create(stream_name, {"outbox.>"}); }

  [[nodiscard]] outbox::nats_options options() const {
    outbox::nats_options o;
    o.urls = {server.url()};
    o.reconnect_wait = 50ms;
    o.ack_timeout = 3s;
    return o;
  }

  /// Stream messages by their Nats-Msg-Id; fails the test if an id is stored twice.
  std::map<std::string, outbox_test::stored_message> by_id() {
    std::map<std::string, outbox_test::stored_message> out;
    for (auto& m : admin.messages(stream_name)) {
      const std::string id = m.headers[outbox::nats_headers::msg_id];
      INFO("event " << id << " at stream sequence " << m.sequence);
      CHECK(out.count(id) == 0);
      out.emplace(id, std::move(m));
    }
    return out;
  }
};

outbox::event make_event(outbox::event_id_generator& ids, std::string type, std::string entity,
                         std::string payload = "{}") {
  outbox::event e;
  const auto now = outbox::system_clock{}.now();
  e.id = ids.next(now);
  e.type = std::move(type);
  e.entity_id = entity;
  e.ordering_key = std::move(entity);
  e.user_id = "alice";
  e.payload = std::move(payload);
  e.attempts = 1;
  e.created_at = now;
  e.updated_at = now;
  return e;
}

std::vector<outbox::delivery_result> send(outbox::nats_transport& t, const std::vector<outbox::event>& batch) {
  std::vector<outbox::delivery_result> results(batch.size(), outbox::delivery_result::retryable("no result"));
  t.send(batch, results);
  return results;
}

using nats_box = outbox::Outbox<outbox::memory_storage, outbox::nats_transport, outbox::manual_clock>;

}  // namespace

TEST_CASE("nats_transport: each event becomes one message with its id and description as headers", "[nats]") {
  OUTBOX_REQUIRE_NATS_SERVER();
  jetstream js;
  outbox::manual_clock clock;
  nats_box box(outbox::memory_storage(), outbox::nats_transport(js.options()), clock);
  box.set_user("alice");
  const auto steps = box.enqueue({.type = "steps.saved", .entity_id = "steps-1", .payload = R"({"steps":1200})"}).value();
  const auto weight =
      box.enqueue({.type = "weight.saved", .entity_id = "weight-1", .payload = "{}", .ordering_key = "alice-weight"})
          .value();

  const auto report = box.process_once();
  REQUIRE(report.delivered == 2);

  auto stored = js.by_id();
  REQUIRE(stored.size() == 2);
  const auto& m = stored.at(steps.to_string());
  CHECK(m.subject == "outbox.steps.saved");
  CHECK(m.data == R"({"steps":1200})");
  CHECK(m.headers.at(outbox::nats_headers::type) == "steps.saved");
  CHECK(m.headers.at(outbox::nats_headers::entity_id) == "steps-1");
  CHECK(m.headers.at(outbox::nats_headers::user_id) == "alice");
  CHECK(m.headers.at(outbox::nats_headers::ordering_key) == "steps-1");
  CHECK(m.headers.at(outbox::nats_headers::attempt) == "1");
  CHECK(stored.at(weight.to_string()).headers.at(outbox::nats_headers::ordering_key) == "alice-weight");
  // The remote id names where the stream put it.
  CHECK(box.find(steps).value()->remote_id == stream_name + ":" + std::to_string(m.sequence));
}

TEST_CASE("nats_transport: a redelivery after a lease expired leaves one message per event", "[nats]") {
  OUTBOX_REQUIRE_NATS_SERVER();
  jetstream js;
  outbox::nats_transport transport(js.options());
  outbox::memory_storage storage;
  outbox::event_id_generator ids;
  std::vector<outbox::event> events;
  for (int i = 0; i < 5; ++i) events.push_back(make_event(ids, "steps.saved", "steps-" + std::to_string(i)));
  for (auto& e : events) e.attempts = 0;
  REQUIRE(storage.append(events));

  // A relay claims and sends, then dies before recording: its lease runs out and another
  // claim hands the same events over again.
  const auto t0 = outbox::system_clock{}.now();
  std::vector<outbox::event> first;
  REQUIRE(storage.claim({"alice", t0, t0 + 1min, 10}, first).value() == 5);
  const auto sent = send(transport, first);
  std::vector<outbox::event> again;
  REQUIRE(storage.claim({"alice", t0 + 2min, t0 + 3min, 10}, again).value() == 5);
  const auto resent = send(transport, again);

  for (std::size_t i = 0; i < again.size(); ++i) {
    CHECK(again[i].attempts == 2);
    REQUIRE(sent[i].outcome == outbox::delivery_result::kind::delivered);
    REQUIRE(resent[i].outcome == outbox::delivery_result::kind::delivered);
    CHECK(resent[i].remote_id == sent[i].remote_id);  // the duplicate ack names the stored copy
  }
  const auto stored = js.by_id();
  CHECK(stored.size() == 5);
  for (const auto& e : events) CHECK(stored.count(e.id.to_string()) == 1);
}

TEST_CASE("nats_transport: a server stopped mid-batch answers unavailable and uses no attempt; restarted, all drain",
          "[nats]") {
  OUTBOX_REQUIRE_NATS_SERVER();
  jetstream js;
  auto options = js.options();
  int subjects_asked = 0;
  bool stop_armed = true;
  options.subject = [&](const outbox::event& e) {
    // The tenth event of the batch: the server goes away before it is published.
    if (stop_armed && ++subjects_asked == 10) {
      stop_armed = false;
      js.server.stop();
    }
    return "outbox." + e.type;
  };
  outbox::manual_clock clock;
  outbox::options box_options;
  box_options.batch_size = 20;
  nats_box box(outbox::memory_storage(), outbox::nats_transport(options), clock, outbox::exponential_backoff(),
               box_options);
  box.set_user("alice");
  std::vector<outbox::event_id> ids;
  for (int i = 0; i < 20; ++i)
    ids.push_back(box.enqueue({.type = "steps.saved", .entity_id = "steps-" + std::to_string(i), .payload = "{}"}).value());

  const auto report = box.process_once();
  CHECK(report.claimed == 20);
  CHECK(report.retried == 0);
  CHECK(report.dead == 0);
  CHECK(report.unavailable >= 11);  // the tenth and later were never published
  CHECK(report.delivered + report.unavailable == 20);
  for (const auto& id : ids) {
    const auto e = box.find(id).value().value();
    if (e.status == outbox::status::completed) continue;
    CHECK(e.status == outbox::status::pending);
    CHECK(e.attempts == 0);
  }

  js.server.start();  // same store directory, same port: the stream is back
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (box.stats().value().count(outbox::status::completed) < ids.size() &&
         std::chrono::steady_clock::now() < deadline) {
    box.process_once();
    clock.advance(10min);  // retries answered while JetStream recovers fall due at once
    std::this_thread::sleep_for(20ms);
  }
  REQUIRE(box.stats().value().count(outbox::status::completed) == ids.size());
  const auto stored = js.by_id();
  CHECK(stored.size() == ids.size());
  for (const auto& id : ids) CHECK(stored.count(id.to_string()) == 1);
}

TEST_CASE("nats_transport: no ack in time while connected is retryable, and the resend is deduplicated", "[nats]") {
  OUTBOX_REQUIRE_NATS_SERVER();
  jetstream js;
  auto options = js.options();
  options.ack_timeout = 300ms;
  outbox::nats_transport transport(options);
  outbox::event_id_generator ids;
  std::vector<outbox::event> batch;
  for (int i = 0; i < 3; ++i) batch.push_back(make_event(ids, "steps.saved", "steps-" + std::to_string(i)));

  js.server.pause();  // the connection stays open; nothing is answered
  const auto frozen = send(transport, batch);
  js.server.resume();
  for (const auto& r : frozen) {
    CHECK(r.outcome == outbox::delivery_result::kind::retryable);
    CHECK_THAT(r.error, Catch::Contains("no ack within 300 ms"));
  }
  // The server now stores what it had buffered; the resend finds those copies.
  REQUIRE(eventually([&] { return js.admin.state(stream_name).first == 3; }, 10s));
  const auto resent = send(transport, batch);
  for (const auto& r : resent) CHECK(r.outcome == outbox::delivery_result::kind::delivered);
  CHECK(js.by_id().size() == 3);
}

TEST_CASE("nats_transport: what the broker cannot take is permanent, a subject no stream captures retryable",
          "[nats]") {
  OUTBOX_REQUIRE_NATS_SERVER();
  jetstream js;
  auto options = js.options();
  js.admin.create("SMALL", {"small.>"}, -1, 100);  // messages of at most 100 bytes
  options.subject = [](const outbox::event& e) {
    if (e.type == "nowhere") return std::string("elsewhere.nowhere");
    if (e.type == "small") return std::string("small.events");
    return "outbox." + e.type;
  };
  outbox::nats_transport transport(options);
  outbox::event_id_generator ids;
  std::vector<outbox::event> batch;
  batch.push_back(make_event(ids, "steps.saved", "steps-1"));
  batch.push_back(make_event(ids, "steps.saved", "steps-2", std::string(2u << 20, 'x')));  // over 1 MiB
  batch.push_back(make_event(ids, "bad type", "steps-3"));                                // a space
  batch.push_back(make_event(ids, "nowhere", "steps-4"));
  batch.push_back(make_event(ids, "steps.saved", "line\r\nbreak"));
  batch.push_back(make_event(ids, "small", "steps-6", std::string(200, 'x')));  // over the stream's limit

  const auto results = send(transport, batch);
  CHECK(results[0].outcome == outbox::delivery_result::kind::delivered);
  CHECK(results[1].outcome == outbox::delivery_result::kind::permanent);
  CHECK_THAT(results[1].error, Catch::Contains("maximum"));
  CHECK(results[2].outcome == outbox::delivery_result::kind::permanent);
  CHECK_THAT(results[2].error, Catch::Contains("not a valid subject"));
  CHECK(results[3].outcome == outbox::delivery_result::kind::retryable);
  CHECK_THAT(results[3].error, Catch::Contains("no responders"));
  CHECK(results[4].outcome == outbox::delivery_result::kind::permanent);
  CHECK(results[5].outcome == outbox::delivery_result::kind::permanent);
  CHECK_THAT(results[5].error, Catch::Contains("JetStream refused"));
  CHECK(js.by_id().size() == 1);
}

TEST_CASE("nats_transport: without a server sends are unavailable; bad configuration is a typed error", "[nats]") {
  OUTBOX_REQUIRE_NATS_SERVER();
  std::string url;
  {
    outbox_test::nats_server gone;
    url = gone.url();
  }  // stopped: nothing listens on its port now
  outbox::nats_options options;
  options.urls = {url};
  auto transport = outbox::nats_transport::connect(options);
  REQUIRE(transport);
  CHECK_FALSE(transport->connected());
  outbox::event_id_generator ids;
  const auto results = send(*transport, {make_event(ids, "steps.saved", "steps-1")});
  CHECK(results[0].outcome == outbox::delivery_result::kind::unavailable);

  options.connect_in_background = false;
  auto refused = outbox::nats_transport::connect(options);
  REQUIRE_FALSE(refused);
  CHECK(refused.error() == outbox::errc::io_error);

  auto invalid = [](auto change) {
    outbox::nats_options o;
    change(o);
    auto t = outbox::nats_transport::connect(o);
    REQUIRE_FALSE(t);
    CHECK(t.error() == outbox::errc::invalid_argument);
    return t.error().message;
  };
  CHECK_THAT(invalid([](auto& o) { o.urls.clear(); }), Catch::Contains("at least one server"));
  CHECK_THAT(invalid([](auto& o) { o.subject_prefix = "outbox..events"; }), Catch::Contains("subject_prefix"));
  CHECK_THAT(invalid([](auto& o) { o.subject_prefix = "outbox.>"; }), Catch::Contains("subject_prefix"));
  CHECK_THAT(invalid([](auto& o) { o.credentials_file = "/nonexistent/user.creds"; }), Catch::Contains("cannot read"));
  CHECK_THAT(invalid([](auto& o) { o.ack_timeout = 0ms; }), Catch::Contains("ack_timeout"));
  outbox::nats_options no_urls;
  no_urls.urls.clear();
  CHECK_THROWS_AS(outbox::nats_transport(no_urls), outbox::exception);
}

#ifdef OUTBOX_TEST_WITH_OPENSSL
TEST_CASE("nats_transport: over TLS a CA file makes a private certificate trusted; a wrong CA is unavailable",
          "[nats][tls]") {
  OUTBOX_REQUIRE_NATS_SERVER();
  const outbox_test::self_signed identity;  // the server's
  const outbox_test::self_signed stranger;  // signed nothing the server holds
  outbox_test::nats_server server({"--tls", "--tlscert", identity.cert_file(), "--tlskey", identity.key_file()});
  REQUIRE(server.url().rfind("tls://", 0) == 0);  // TLS required of every client
  outbox_test::stream_admin admin(server.url(), identity.ca_file());
  admin.create(stream_name, {"outbox.>"});
  outbox::event_id_generator ids;
  const std::vector<outbox::event> batch = {make_event(ids, "steps.saved", "steps-1"),
                                            make_event(ids, "steps.saved", "steps-2")};
  outbox::nats_options o;
  o.urls = {server.url()};
  o.reconnect_wait = 50ms;
  o.ack_timeout = 3s;

  SECTION("trusted through tls.ca_file: delivered") {
    o.tls.ca_file = identity.ca_file();
    auto t = outbox::nats_transport::connect(o);
    REQUIRE(t);
    const auto results = send(*t, batch);
    CHECK(results[0].outcome == outbox::delivery_result::kind::delivered);
    CHECK(results[1].outcome == outbox::delivery_result::kind::delivered);
    CHECK(admin.state(stream_name).first == 2);
  }

  SECTION("a CA that did not sign the server's certificate: unavailable, nothing sent; a typed error without "
          "background connecting") {
    o.tls.ca_file = stranger.ca_file();
    auto t = outbox::nats_transport::connect(o);
    REQUIRE(t);
    CHECK_FALSE(t->connected());
    const auto results = send(*t, batch);
    CHECK(results[0].outcome == outbox::delivery_result::kind::unavailable);
    CHECK(results[1].outcome == outbox::delivery_result::kind::unavailable);
    CHECK(admin.state(stream_name).first == 0);

    o.connect_in_background = false;
    auto refused = outbox::nats_transport::connect(o);
    REQUIRE_FALSE(refused);
    CHECK(refused.error() == outbox::errc::io_error);
    CHECK_THAT(refused.error().message, Catch::Contains("TLS handshake") && Catch::Contains("certificate"));
  }
}
#endif

// ---- the example relay, as a process of its own ---------------------------------------------------

namespace {

/// Events a service appended to a SQLite outbox (user "service", a few ordering keys).
std::vector<outbox::event_id> append_events(const std::string& db, int count, int keys) {
  outbox::Outbox<outbox::sqlite_storage, outbox::mock_transport> box{outbox::sqlite_storage(db)};
  std::vector<outbox::new_event> events;
  for (int i = 0; i < count; ++i) {
    // Kills use up attempts of the events in flight; none may die of it here.
    events.push_back({.type = "order.placed",
                      .entity_id = "order-" + std::to_string(i),
                      .payload = R"({"n":)" + std::to_string(i) + "}",
                      .user_id = "service",
                      .ordering_key = "customer-" + std::to_string(i % keys),
                      .max_attempts = 1000});
  }
  return box.enqueue(std::span<const outbox::new_event>(events)).value();  // one transaction
}

std::vector<std::string> relay_command(const std::string& db, const std::string& url) {
  return {OUTBOX_RELAY_TO_NATS, "--db", db, "--url", url, "--batch", "10"};
}

/// Reads the child's stdout until a line starting with `prefix`; false on EOF or timeout.
bool wait_for_line(int fd, const std::string& prefix, std::chrono::milliseconds timeout) {
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (text.rfind(prefix, 0) == 0 || text.find("\n" + prefix) != std::string::npos) return true;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char chunk[256];
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n <= 0) return false;
    text.append(chunk, static_cast<std::size_t>(n));
  }
}

}  // namespace

TEST_CASE("relay_to_nats: the example relay drains a SQLite outbox into the stream", "[nats][example]") {
  OUTBOX_REQUIRE_NATS_SERVER();
  jetstream js;
  const auto file = outbox_test::temp_path("outbox-relay.db");
  outbox_test::temp_file_owner owner(file);
  const auto ids = append_events(file.string(), 30, 4);

  auto command = relay_command(file.string(), js.server.url());
  command.insert(command.end(), {"--until-drained", "--timeout", "30"});
  const int status = outbox_test::reap(outbox_test::spawn_child(command));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);

  auto stored = js.by_id();
  CHECK(stored.size() == ids.size());
  for (const auto& id : ids) {
    REQUIRE(stored.count(id.to_string()) == 1);
    CHECK(stored.at(id.to_string()).headers.at(outbox::nats_headers::user_id) == "service");
  }

  // As a service runs it: the background runner delivers what arrives, SIGTERM ends it cleanly.
  const auto more = append_events(file.string(), 10, 4);
  int out[2];
  REQUIRE(::pipe(out) == 0);
  const pid_t relay = outbox_test::spawn_child(relay_command(file.string(), js.server.url()), out[1]);
  ::close(out[1]);
  const bool started = wait_for_line(out[0], "relay: started", 20s);
  const bool delivered = eventually([&] { return js.admin.state(stream_name).first == ids.size() + more.size(); });
  ::kill(relay, SIGTERM);
  const bool stopped = wait_for_line(out[0], "relay: stopped by signal", 20s);
  const int runner_status = outbox_test::reap(relay);
  ::close(out[0]);
  CHECK(started);
  CHECK(delivered);
  CHECK(stopped);
  CHECK(WIFEXITED(runner_status));
  CHECK(WEXITSTATUS(runner_status) == 0);
}

TEST_CASE("relay_to_nats: SIGKILLed mid-batch again and again, the stream holds every event exactly once",
          "[nats][crash]") {
  OUTBOX_REQUIRE_NATS_SERVER();
  jetstream js;
  const auto file = outbox_test::temp_path("outbox-relay-crash.db");
  outbox_test::temp_file_owner owner(file);
  std::mt19937_64 random(std::random_device{}());
  constexpr int kills = 24;
  constexpr int keys = 7;
  std::vector<outbox::event_id> acknowledged;
  int kills_mid_batch = 0;

  for (int life = 0; life < kills; ++life) {
    // New events arrive between lives; the relay is the storage's only user while it runs.
    const auto added = append_events(file.string(), 60, keys);
    acknowledged.insert(acknowledged.end(), added.begin(), added.end());

    int out[2];
    REQUIRE(::pipe(out) == 0);
    const pid_t relay = outbox_test::spawn_child(relay_command(file.string(), js.server.url()), out[1]);
    ::close(out[1]);
    const bool started = wait_for_line(out[0], "relay: started", 20s);
    // Kill within the first batches: claims made, messages published, acks on their way.
    std::this_thread::sleep_for(std::chrono::microseconds(random() % 30'000));
    ::kill(relay, SIGKILL);
    const int status = outbox_test::reap(relay);
    ::close(out[0]);
    REQUIRE(started);
    REQUIRE(WIFSIGNALED(status));

    outbox::sqlite_storage storage(file.string());
    const auto stats = storage.stats(std::nullopt, outbox::system_clock{}.now()).value();
    kills_mid_batch += stats.count(outbox::status::processing) > 0;
  }

  auto command = relay_command(file.string(), js.server.url());
  command.insert(command.end(), {"--until-drained", "--timeout", "60"});
  const int status = outbox_test::reap(outbox_test::spawn_child(command));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);

  outbox::sqlite_storage storage(file.string());
  auto all = storage.query({.status_is = std::nullopt, .user_id = std::nullopt, .limit = 100'000}).value();
  CHECK(kills_mid_batch > 0);
  const auto stored = js.by_id();
  CHECK(stored.size() == acknowledged.size());
  for (const auto& id : acknowledged) REQUIRE(stored.count(id.to_string()) == 1);

  // A stored copy from an earlier attempt than the one that completed the event means a later
  // publish was answered by a duplicate ack: JetStream dropped the resend.
  std::size_t deduplicated = 0;
  for (const auto& e : all)
    deduplicated += std::stoi(stored.at(e.id.to_string()).headers.at(outbox::nats_headers::attempt)) < e.attempts;
  std::printf("relay_to_nats crash test: %d kills, %d with a batch in flight, %zu events, %zu resends dropped as "
              "duplicates\n",
              kills, kills_mid_batch, acknowledged.size(), deduplicated);
  CHECK(deduplicated > 0);  // the kills did make the relay send stored events again

  // Per ordering key, the stream holds the events in the order they were appended.
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.seq < b.seq; });
  std::map<std::string, std::uint64_t> last_sequence;
  for (const auto& e : all) {
    CHECK(e.status == outbox::status::completed);
    const std::uint64_t sequence = stored.at(e.id.to_string()).sequence;
    INFO("ordering key " << e.ordering_key << ", event seq " << e.seq);
    CHECK(sequence > last_sequence[e.ordering_key]);
    last_sequence[e.ordering_key] = sequence;
  }
}
