// outbox::http_transport against a real HTTP server (cpp-httplib, in this process, on 127.0.0.1):
// what each request carries, what each answer means, what happens when the server is slow,
// drops the connection, is stopped or demands a token, and a real Outbox delivering through it.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <ctime>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <outbox/outbox.hpp>
#include <outbox/transport/http.hpp>

#include "support/http_server.hpp"
#include "support/self_signed.hpp"

using namespace std::chrono_literals;
using kind = outbox::delivery_result::kind;
using outbox::delivery_result;
using outbox::http_options;
using outbox::http_transport;
using outbox_test::http_server;

static_assert(outbox::transport<http_transport>);
static_assert(outbox::error_reporting_transport<http_transport>);

namespace {

struct event_factory {
  outbox::event_id_generator ids{7};
  int next = 0;

  outbox::event make(std::string payload = R"({"steps":1200})", std::string type = "steps.hourly.saved",
                     int attempt = 1) {
    outbox::event e;
    e.id = ids.next(outbox::system_clock{}.now());
    e.type = std::move(type);
    e.entity_id = "entity-" + std::to_string(++next);
    e.ordering_key = e.entity_id;
    e.user_id = "alice";
    e.payload = std::move(payload);
    e.status = outbox::status::processing;
    e.attempts = attempt;
    return e;
  }
};

/// Sends `batch` as the outbox would: results pre-filled with "retryable: no result".
std::vector<delivery_result> send(http_transport& t, const std::vector<outbox::event>& batch) {
  std::vector<delivery_result> results(batch.size(), delivery_result::retryable("no result"));
  t.send(batch, results);
  return results;
}

http_options options_for(const http_server& server) {
  http_options o;
  o.base_url = server.url() + "/v1";
  o.timeout = 5s;
  o.connect_timeout = 2s;
  return o;
}

/// A server that answers the status written as the request's body ("503"), with `headers`.
void answer_with_body_status(http_server& server, std::multimap<std::string, std::string> headers = {}) {
  server.set_script([headers](const httplib::Request& req, httplib::Response& res, std::size_t) {
    res.status = std::stoi(req.body);
    for (const auto& [name, value] : headers) res.set_header(name, value);
    // A 204 has no body (httplib would send one, and the client would read it as the next answer).
    if (res.status != 204) res.set_content("answer " + req.body + " for " + req.get_header_value("Idempotency-Key"), "text/plain");
  });
}

std::string http_date(std::chrono::system_clock::time_point t) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char text[64];
  std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return text;
}

}  // namespace

// ---- requests ------------------------------------------------------------------------------

TEST_CASE("each event is one POST to base_url + its route, with its id as Idempotency-Key", "[http]") {
  http_server server;
  http_options o = options_for(server);
  o.headers = {{"X-Client", "outbox-tests"}};
  http_transport t(o);
  event_factory f;
  const std::vector<outbox::event> batch = {f.make(R"({"steps":1})"), f.make(R"({"kg":71.4})", "weight.saved", 3)};
  const auto results = send(t, batch);

  REQUIRE(results[0].outcome == kind::delivered);
  REQUIRE(results[1].outcome == kind::delivered);
  CHECK(results[0].remote_id == "/things/" + batch[0].id.to_string());  // the Location header
  const auto seen = server.requests();
  REQUIRE(seen.size() == 2);
  std::map<std::string, http_server::request> by_key;
  for (const auto& r : seen) by_key[r.idempotency_key] = r;
  const auto& steps = by_key.at(batch[0].id.to_string());
  CHECK(steps.path == "/v1/steps/hourly");
  CHECK(steps.body == R"({"steps":1})");
  CHECK(steps.content_type == "application/json");
  CHECK(steps.event_type == "steps.hourly.saved");
  CHECK(steps.entity_id == batch[0].entity_id);
  CHECK(steps.attempt == "1");
  const auto& weight = by_key.at(batch[1].id.to_string());
  CHECK(weight.path == "/v1/weight");
  CHECK(weight.attempt == "3");
}

TEST_CASE("the route, headers and the whole request are the user's to choose", "[http]") {
  http_server server;
  event_factory f;
  SECTION("a route function") {
    http_options o = options_for(server);
    o.route = [](const outbox::event& e) { return "/users/" + e.user_id + "/entries"; };
    http_transport t(o);
    REQUIRE(send(t, {f.make()})[0].outcome == kind::delivered);
    CHECK(server.requests().at(0).path == "/v1/users/alice/entries");
  }
  SECTION("a request builder") {
    http_options o = options_for(server);
    o.request = [](const outbox::event& e, const http_options& opts) {
      outbox::http_request r = outbox::default_http_request(e, opts);
      r.body = "{\"wrapped\":" + e.payload + "}";
      r.headers.emplace_back("X-Evil", "a\r\nInjected: yes");  // line breaks cannot add a header
      return r;
    };
    http_transport t(o);
    const auto e = f.make();
    REQUIRE(send(t, {e})[0].outcome == kind::delivered);
    const auto seen = server.requests().at(0);
    CHECK(seen.body == "{\"wrapped\":" + e.payload + "}");
    CHECK(seen.idempotency_key == e.id.to_string());
  }
  SECTION("a remote id from the body") {
    server.set_script([](const httplib::Request&, httplib::Response& res, std::size_t n) {
      res.status = 201;
      res.set_content("{\"id\":\"srv-" + std::to_string(n) + "\"}", "application/json");
    });
    http_options o = options_for(server);
    o.remote_id = outbox::remote_id_from_body([](std::string_view body) {
      const auto start = body.find("srv-");
      return std::string(body.substr(start, body.find('"', start) - start));
    });
    http_transport t(o);
    CHECK(send(t, {f.make()})[0].remote_id == "srv-1");
  }
}

// ---- answers -------------------------------------------------------------------------------

TEST_CASE("answers map to delivered, retryable, permanent by status", "[http]") {
  http_server server;
  answer_with_body_status(server);
  http_transport t(options_for(server));
  event_factory f;
  const std::vector<int> delivered = {200, 201, 202, 204};
  const std::vector<int> retryable = {408, 425, 429, 500, 502, 503, 504};
  const std::vector<int> permanent = {400, 401, 403, 404, 409, 410, 422, 501};
  std::vector<outbox::event> batch;
  for (const auto list : {&delivered, &retryable, &permanent})
    for (const int status : *list) batch.push_back(f.make(std::to_string(status)));
  const auto results = send(t, batch);

  std::size_t i = 0;
  for (const int status : delivered) {
    INFO("status " << status);
    CHECK(results[i++].outcome == kind::delivered);
  }
  for (const int status : retryable) {
    INFO("status " << status);
    CHECK(results[i].outcome == kind::retryable);
    CHECK_THAT(results[i].error, Catch::StartsWith("HTTP " + std::to_string(status) + ": answer "));
    CHECK_FALSE(results[i++].retry_after.has_value());
  }
  for (const int status : permanent) {
    INFO("status " << status);
    CHECK(results[i].outcome == kind::permanent);
    CHECK(results[i].error == "HTTP " + std::to_string(status) + ": answer " + std::to_string(status) + " for " +
                                  batch[i].id.to_string());
    ++i;
  }
}

TEST_CASE("a failure keeps only the start of the answer's body", "[http]") {
  http_server server;
  server.set_script([](const httplib::Request&, httplib::Response& res, std::size_t) {
    res.status = 422;
    res.set_content(std::string(5000, 'x'), "text/plain");
  });
  http_options o = options_for(server);
  o.error_body_bytes = 16;
  http_transport t(o);
  event_factory f;
  CHECK(send(t, {f.make()})[0].error == "HTTP 422: " + std::string(16, 'x'));
}

TEST_CASE("Retry-After is honoured in both its forms", "[http]") {
  http_server server;
  event_factory f;
  SECTION("delta-seconds") {
    answer_with_body_status(server, {{"Retry-After", "120"}});
    http_transport t(options_for(server));
    const auto r = send(t, {f.make("429"), f.make("503")});
    for (const auto& one : r) {
      CHECK(one.outcome == kind::retryable);
      CHECK(one.retry_after == std::chrono::seconds(120));
    }
  }
  SECTION("an HTTP-date, measured from the server's Date") {
    const auto server_now = std::chrono::system_clock::now() - std::chrono::hours(5);  // a clock that is off
    answer_with_body_status(server, {{"Date", http_date(server_now)}, {"Retry-After", http_date(server_now + 90s)}});
    http_transport t(options_for(server));
    const auto r = send(t, {f.make("503")})[0];
    CHECK(r.outcome == kind::retryable);
    CHECK(r.retry_after == std::chrono::seconds(90));
  }
  SECTION("an HTTP-date without a Date header, measured from our clock") {
    answer_with_body_status(server, {{"Retry-After", http_date(std::chrono::system_clock::now() + 60s)}});
    http_transport t(options_for(server));
    const auto r = send(t, {f.make("503")})[0];
    REQUIRE(r.retry_after.has_value());
    CHECK(*r.retry_after > 55s);
    CHECK(*r.retry_after <= 60s);
  }
  SECTION("a value in neither form is no hint") {
    answer_with_body_status(server, {{"Retry-After", "soon"}});
    http_transport t(options_for(server));
    const auto r = send(t, {f.make("503")})[0];
    CHECK(r.outcome == kind::retryable);
    CHECK_FALSE(r.retry_after.has_value());
  }
}

TEST_CASE("Retry-After dates parse in all three HTTP-date forms", "[http]") {
  using outbox::detail::http::parse_http_date;
  using std::chrono::sys_days;
  const auto expected = sys_days(std::chrono::year(1994) / 11 / 6) + 8h + 49min + 37s;
  CHECK(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == expected);
  CHECK(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == expected);
  CHECK(parse_http_date("Sun Nov  6 08:49:37 1994") == expected);
  CHECK(parse_http_date("Thu, 01-Jan-26 00:00:00 GMT") == sys_days(std::chrono::year(2026) / 1 / 1));
  for (const char* bad : {"", "120", "Sun, 06 Nov 1994 08:49:37", "Sun, 31 Feb 1994 08:49:37 GMT",
                          "Sun, 06 Nox 1994 08:49:37 GMT", "Sun, 06 Nov 1994 25:00:00 GMT", "Sun Nov  6 08:49:37"}) {
    INFO(bad);
    CHECK_FALSE(parse_http_date(bad).has_value());
  }
  const auto now = outbox::timestamp(std::chrono::seconds(1767225600));  // 2026-01-01
  CHECK(outbox::detail::http::parse_retry_after(" 7 ", "", now) == std::chrono::seconds(7));
  CHECK(outbox::detail::http::parse_retry_after("7s", "", now) == std::nullopt);
  CHECK(outbox::detail::http::parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", "", now) == outbox::duration::zero());
}

TEST_CASE("a server hint is bounded by the backoff's cap", "[http]") {
  http_server server;
  answer_with_body_status(server, {{"Retry-After", "86400"}});
  outbox::exponential_backoff::config cap;
  cap.cap = 10min;
  outbox::Outbox<outbox::memory_storage, http_transport, outbox::manual_clock> box(
      outbox::memory_storage(), http_transport(options_for(server)), outbox::manual_clock(), outbox::exponential_backoff(cap));
  box.set_user("alice");
  const auto id = box.enqueue({.type = "steps.saved", .entity_id = "s", .payload = "503"}).value();
  CHECK(box.process_once().retried == 1);
  const auto e = box.find(id).value().value();
  CHECK(e.retry_after - e.updated_at == 10min);
}

// ---- no answer -----------------------------------------------------------------------------

TEST_CASE("a slow answer past the timeout is retryable: the server may have the event", "[http]") {
  http_server server;
  server.set_script([](const httplib::Request&, httplib::Response& res, std::size_t) {
    std::this_thread::sleep_for(600ms);
    res.status = 201;
  });
  http_options o = options_for(server);
  o.timeout = 150ms;
  http_transport t(o);
  event_factory f;
  const auto r = send(t, {f.make()})[0];
  CHECK(r.outcome == kind::retryable);
  CHECK_THAT(r.error, Catch::Contains("Timeout", Catch::CaseSensitive::No));
}

TEST_CASE("a connection dropped mid-answer is retryable", "[http]") {
  http_server server;
  server.set_script([](const httplib::Request&, httplib::Response& res, std::size_t) {
    res.status = 200;
    res.set_content_provider(1000, "application/json", [](std::size_t, std::size_t, httplib::DataSink& sink) {
      sink.write("{\"partial\":", 11);
      return false;  // abandon the answer: httplib closes the connection
    });
  });
  http_transport t(options_for(server));
  event_factory f;
  const auto r = send(t, {f.make()})[0];
  CHECK(r.outcome == kind::retryable);
  CHECK_THAT(r.error, Catch::StartsWith("HTTP request failed"));
}

TEST_CASE("a stopped server (connection refused) is unavailable", "[http]") {
  http_server server;
  http_transport t(options_for(server));
  server.stop();
  event_factory f;
  const auto results = send(t, {f.make(), f.make()});
  for (const auto& r : results) {
    CHECK(r.outcome == kind::unavailable);
    CHECK_THAT(r.error, Catch::Contains("connect", Catch::CaseSensitive::No));
  }
}

TEST_CASE("a failed TLS handshake is unavailable", "[http]") {
  http_server server;  // speaks plain HTTP: a TLS client hello gets no TLS answer
  http_options o = options_for(server);
  o.base_url = "https://127.0.0.1:" + std::to_string(server.port());
  http_transport t(o);
  event_factory f;
  const auto r = send(t, {f.make()})[0];
  CHECK(r.outcome == kind::unavailable);
  CHECK_THAT(r.error, Catch::Contains("SSL", Catch::CaseSensitive::No));
}

TEST_CASE("TLS is verified by default; a CA file makes a private certificate trusted", "[http]") {
  const outbox_test::self_signed identity;
  http_server server(identity.cert(), identity.key());
  event_factory f;
  SECTION("an untrusted certificate is unavailable: nothing was sent") {
    http_transport t(options_for(server));
    const auto r = send(t, {f.make()})[0];
    CHECK(r.outcome == kind::unavailable);
    CHECK_THAT(r.error, Catch::Contains("certificate", Catch::CaseSensitive::No));
    CHECK(server.requests().empty());
  }
  SECTION("trusted through ca_file") {
    http_options o = options_for(server);
    o.ca_file = identity.ca_file();
    http_transport t(o);
    CHECK(send(t, {f.make(), f.make()})[1].outcome == kind::delivered);
    CHECK(server.requests().size() == 2);
  }
  SECTION("verification off") {
    http_options o = options_for(server);
    o.verify_tls = false;
    http_transport t(o);
    CHECK(send(t, {f.make()})[0].outcome == kind::delivered);
  }
}

TEST_CASE("failures before anything was sent are unavailable, after it retryable", "[http]") {
  using outbox::detail::http::transfer_failure;
  for (const CURLcode code : {CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY, CURLE_COULDNT_CONNECT,
                              CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION}) {
    INFO(curl_easy_strerror(code));
    CHECK(transfer_failure(code, false, "").outcome == kind::unavailable);
  }
  CHECK(transfer_failure(CURLE_OPERATION_TIMEDOUT, false, "").outcome == kind::unavailable);  // connect timeout
  CHECK(transfer_failure(CURLE_OPERATION_TIMEDOUT, true, "").outcome == kind::retryable);
  CHECK(transfer_failure(CURLE_RECV_ERROR, true, "reset").outcome == kind::retryable);
  CHECK(transfer_failure(CURLE_RECV_ERROR, true, "reset").error == "HTTP request failed: Failure when receiving data from the peer (reset)");
}

// ---- construction --------------------------------------------------------------------------

TEST_CASE("a malformed base URL is a typed error at construction", "[http]") {
  for (const char* bad : {"", "not a url", "ftp://example.com", "http://", "http://example.com/v1?key=1",
                          "http://example.com/#top"}) {
    INFO(bad);
    http_options o;
    o.base_url = bad;
    const auto made = http_transport::make(o);
    REQUIRE_FALSE(made.has_value());
    CHECK(made.error() == outbox::errc::invalid_argument);
    CHECK_THAT(made.error().message, Catch::Contains("base_url"));
    CHECK_THROWS_AS(http_transport(o), outbox::exception);
  }
  http_options zero;
  zero.base_url = "http://127.0.0.1:1";
  zero.max_in_flight = 0;
  CHECK(http_transport::make(zero).error() == outbox::errc::invalid_argument);
  http_options fine;
  fine.base_url = "https://api.example.com/v1/";
  CHECK(http_transport::make(fine).has_value());
}

// ---- connections ---------------------------------------------------------------------------

TEST_CASE("connections are kept alive from one batch to the next", "[http]") {
  http_server server;
  http_options o = options_for(server);
  o.max_in_flight = 1;
  http_transport t(o);
  event_factory f;
  for (int round = 0; round < 3; ++round) REQUIRE(send(t, {f.make(), f.make()})[1].outcome == kind::delivered);
  std::set<int> connections;
  for (const auto& r : server.requests()) connections.insert(r.remote_port);
  CHECK(server.requests().size() == 6);
  CHECK(connections.size() == 1);
}

TEST_CASE("the events of a batch are in flight together, up to max_in_flight", "[http]") {
  http_server server;
  std::atomic<int> now{0}, most{0};
  server.set_script([&](const httplib::Request&, httplib::Response& res, std::size_t) {
    const int in = ++now;
    int seen = most.load();
    while (in > seen && !most.compare_exchange_weak(seen, in)) {
    }
    std::this_thread::sleep_for(300ms);  // long enough for all four to arrive on a loaded machine
    --now;
    res.status = 201;
  });
  http_options o = options_for(server);
  o.max_in_flight = 4;
  http_transport t(o);
  event_factory f;
  std::vector<outbox::event> batch;
  for (int i = 0; i < 10; ++i) batch.push_back(f.make());
  const auto results = send(t, batch);
  CHECK(std::all_of(results.begin(), results.end(), [](const auto& r) { return r.outcome == kind::delivered; }));
  CHECK(most.load() == 4);
}

// ---- batch mode ----------------------------------------------------------------------------

TEST_CASE("batch mode sends one request for the batch and maps its answer to every event", "[http]") {
  http_server server;
  http_options o = options_for(server);
  o.batch = true;
  event_factory f;
  const std::vector<outbox::event> batch = {f.make(R"({"a":1})"), f.make("")};
  SECTION("the default body and answer") {
    http_transport t(o);
    const auto results = send(t, batch);
    CHECK(results[0].outcome == kind::delivered);
    CHECK(results[1].outcome == kind::delivered);
    const auto seen = server.requests();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].path == "/v1/events");
    CHECK(seen[0].idempotency_key.empty());
    CHECK(seen[0].body == "[{\"id\":\"" + batch[0].id.to_string() +
                              "\",\"type\":\"steps.hourly.saved\",\"entity_id\":\"entity-1\",\"attempt\":1,\"payload\":{\"a\":1}},"
                              "{\"id\":\"" + batch[1].id.to_string() +
                              "\",\"type\":\"steps.hourly.saved\",\"entity_id\":\"entity-2\",\"attempt\":1,\"payload\":null}]");
  }
  SECTION("the default answer format: one object per event, found by id") {
    server.set_script([&](const httplib::Request&, httplib::Response& res, std::size_t) {
      res.status = 207;
      res.set_content("[{\"id\":\"" + batch[1].id.to_string() +
                          "\",\"status\":503,\"retry_after\":30,\"error\":\"busy \\u00e9\",\"extra\":{\"a\":[1,2]}},\n"
                          " {\"id\":\"" + batch[0].id.to_string() + "\",\"status\":201,\"remote_id\":\"srv-7\"}]",
                      "application/json");
    });
    http_transport t(o);
    const auto results = send(t, batch);
    CHECK(results[0].outcome == kind::delivered);
    CHECK(results[0].remote_id == "srv-7");
    CHECK(results[1].outcome == kind::retryable);
    CHECK(results[1].error == "HTTP 503: busy \xc3\xa9");
    CHECK(results[1].retry_after == std::chrono::seconds(30));
  }
  SECTION("an event the answer does not name is retried; a 2xx that is no array delivers all") {
    // A new script per answer (set under the server's lock): the server's threads never read a
    // string this thread writes.
    const auto answer_200 = [&](std::string body) {
      server.set_script([body](const httplib::Request&, httplib::Response& res, std::size_t) {
        res.status = 200;
        res.set_content(body, "application/json");
      });
    };
    http_transport t(o);
    answer_200("[{\"id\":\"" + batch[0].id.to_string() + "\",\"status\":422,\"error\":\"no\"}]");
    auto results = send(t, batch);
    CHECK(results[0].outcome == kind::permanent);
    CHECK(results[0].error == "HTTP 422: no");
    CHECK(results[1].outcome == kind::retryable);
    CHECK_THAT(results[1].error, Catch::Contains("no status for this event"));
    for (const char* not_an_array : {"", "{\"accepted\":2}", "[{\"id\":1,", "[1,2]"}) {
      INFO(not_an_array);
      answer_200(not_an_array);
      results = send(t, batch);
      CHECK(results[0].outcome == kind::delivered);
      CHECK(results[1].outcome == kind::delivered);
    }
  }
  SECTION("a failed batch fails every event") {
    server.set_script([](const httplib::Request&, httplib::Response& res, std::size_t) {
      res.status = 503;
      res.set_header("Retry-After", "30");
    });
    http_transport t(o);
    for (const auto& r : send(t, batch)) {
      CHECK(r.outcome == kind::retryable);
      CHECK(r.retry_after == std::chrono::seconds(30));
    }
  }
  SECTION("a mapping of one's own: one line per event") {
    server.set_script([](const httplib::Request&, httplib::Response& res, std::size_t) {
      res.status = 200;
      res.set_content("ok r-1\nrejected too heavy\n", "text/plain");
    });
    o.batch_answer = [](std::span<const outbox::event> events, const outbox::http_response& r,
                        std::span<delivery_result> results) {
      std::size_t line_start = 0;
      for (std::size_t i = 0; i < events.size(); ++i) {
        const std::size_t end = r.body.find('\n', line_start);
        const std::string line = r.body.substr(line_start, end - line_start);
        results[i] = line.starts_with("ok ") ? delivery_result::delivered(line.substr(3))
                                             : delivery_result::permanent(line);
        line_start = end + 1;
      }
    };
    http_transport t(o);
    const auto results = send(t, batch);
    CHECK(results[0].outcome == kind::delivered);
    CHECK(results[0].remote_id == "r-1");
    CHECK(results[1].outcome == kind::permanent);
    CHECK(results[1].error == "rejected too heavy");
  }
}

// ---- auth ----------------------------------------------------------------------------------

namespace {
/// A server that accepts only "Bearer <token>" and answers 401 otherwise.
void demand_token(http_server& server, const std::string& token) {
  server.set_script([token](const httplib::Request& req, httplib::Response& res, std::size_t) {
    res.status = req.get_header_value("Authorization") == "Bearer " + token ? 201 : 401;
  });
}

struct token_source {
  std::string current = "expired";
  std::string next = "fresh";
  int refreshes = 0;
  std::function<std::string(bool)> provider() {
    return [this](bool refresh) {
      if (refresh) {
        ++refreshes;
        current = next;
      }
      return current;
    };
  }
};
}  // namespace

TEST_CASE("a 401 refreshes the token once and sends again", "[http]") {
  http_server server;
  demand_token(server, "fresh");
  token_source tokens;
  http_options o = options_for(server);
  o.token = tokens.provider();
  o.max_in_flight = 4;
  http_transport t(o);
  event_factory f;
  std::vector<outbox::event> batch;
  for (int i = 0; i < 6; ++i) batch.push_back(f.make());
  const auto results = send(t, batch);
  CHECK(std::all_of(results.begin(), results.end(), [](const auto& r) { return r.outcome == kind::delivered; }));
  CHECK(tokens.refreshes == 1);  // one refresh for all the requests the old token had sent
  std::size_t fresh = 0;
  for (const auto& r : server.requests()) fresh += r.authorization == "Bearer fresh";
  CHECK(fresh == batch.size());
  // The next batch asks for the current token, now the fresh one: no 401 at all.
  const std::size_t before = server.requests().size();
  CHECK(send(t, {f.make()})[0].outcome == kind::delivered);
  CHECK(server.requests().size() == before + 1);
}

TEST_CASE("a 401 to the refreshed token is unavailable and reported to on_error", "[http]") {
  http_server server;
  demand_token(server, "something else");
  token_source tokens;
  http_options o = options_for(server);
  o.token = tokens.provider();
  outbox::Outbox<outbox::memory_storage, http_transport, outbox::manual_clock> box{outbox::memory_storage(),
                                                                                   http_transport(o)};
  std::vector<outbox::error> errors;
  box.on_error([&](const outbox::error& e) { errors.push_back(e); });
  box.set_user("alice");
  const auto a = box.enqueue({.type = "steps.saved", .entity_id = "a", .payload = "{}"}).value();
  const auto b = box.enqueue({.type = "steps.saved", .entity_id = "b", .payload = "{}"}).value();
  const auto report = box.process_once();
  CHECK(report.unavailable == 2);
  CHECK(tokens.refreshes == 1);
  REQUIRE(errors.size() == 1);  // once per batch, not once per event
  CHECK(errors[0] == outbox::errc::unauthorized);
  for (const auto id : {a, b}) {
    const auto e = box.find(id).value().value();
    CHECK(e.status == outbox::status::pending);
    CHECK(e.attempts == 0);
    CHECK_THAT(e.last_error, Catch::StartsWith("HTTP 401"));
  }
  // The user logs in again: the next token works.
  demand_token(server, "fresh");
  CHECK(box.process_once().delivered == 2);
}

// ---- through a real outbox -----------------------------------------------------------------

namespace {
using http_outbox = outbox::Outbox<outbox::memory_storage, http_transport, outbox::manual_clock, outbox::no_backoff>;

void drain(http_outbox& box) {
  for (int round = 0; round < 100; ++round) {
    const auto report = box.process_once();
    if (report.claimed == 0) return;
  }
  FAIL("the outbox did not drain in 100 cycles");
}
}  // namespace

TEST_CASE("the Idempotency-Key is the event id, the same on every retry", "[http]") {
  http_server server;
  server.set_script([](const httplib::Request& req, httplib::Response& res, std::size_t n) {
    res.status = n < 3 ? 503 : 201;
    res.set_header("Location", "/things/" + req.get_header_value("Idempotency-Key"));
  });
  http_outbox box(outbox::memory_storage(), http_transport(options_for(server)));
  box.set_user("alice");
  const auto id = box.enqueue({.type = "steps.saved", .entity_id = "s", .payload = "{}"}).value();
  drain(box);
  const auto seen = server.requests();
  REQUIRE(seen.size() == 3);
  for (std::size_t i = 0; i < seen.size(); ++i) {
    CHECK(seen[i].idempotency_key == id.to_string());
    CHECK(seen[i].attempt == std::to_string(i + 1));
  }
  CHECK(box.find(id).value()->status == outbox::status::completed);
  CHECK(box.find(id).value()->remote_id == "/things/" + id.to_string());
}

TEST_CASE("with many in flight the server sees each key's events in order, and every end state matches its answers",
          "[http]") {
  http_server server;
  // Answers chosen by the payload: "ok", "flaky" (503 on the first two tries, with Retry-After: 0),
  // "timeout-once" (slower than the timeout once), "reject" (422), "down" (503 for ever).
  std::mutex mutex;
  std::map<std::string, int> tries;
  server.set_script([&](const httplib::Request& req, httplib::Response& res, std::size_t) {
    int n = 0;
    {
      std::lock_guard lock(mutex);
      n = ++tries[req.get_header_value("Idempotency-Key")];
    }
    if (req.body == "flaky" && n <= 2) {
      res.status = 503;
      res.set_header("Retry-After", "0");
    } else if (req.body == "timeout-once" && n == 1) {
      std::this_thread::sleep_for(1500ms);
      res.status = 201;
    } else if (req.body == "reject") {
      res.status = 422;
      res.set_content("entry out of range", "text/plain");
    } else if (req.body == "down") {
      res.status = 503;
    } else {
      res.status = 201;
      res.set_header("Location", "/entries/" + req.get_header_value("Idempotency-Key"));
    }
  });
  http_options o = options_for(server);
  o.max_in_flight = 8;
  o.timeout = 1s;  // far above any answer but the deliberately slow ones, also under sanitizers
  outbox::options opts;
  opts.batch_size = 16;
  opts.max_attempts = 4;
  http_outbox box(outbox::memory_storage(), http_transport(o), outbox::manual_clock(), outbox::no_backoff(), opts);
  box.set_user("alice");

  const std::vector<std::string> kinds = {"ok", "flaky", "ok", "reject", "ok", "down", "flaky"};
  std::map<std::string, std::vector<outbox::event_id>> by_key;  // append order per key
  std::map<outbox::event_id, std::string> kind_of;
  for (int i = 0; i < 120; ++i) {
    const std::string key = "key-" + std::to_string(i % 12);
    // Two slow ones, of different keys, so one timeout covers both.
    const std::string what =
        i == 30 || i == 31 ? "timeout-once" : kinds[static_cast<std::size_t>(i * 5 + i / 12) % kinds.size()];
    const auto id = box.enqueue({.type = "entries.saved", .entity_id = key, .payload = what}).value();
    by_key[key].push_back(id);
    kind_of[id] = what;
  }
  drain(box);

  // First sight of each key's events at the server, in append order.
  std::map<std::string, std::vector<std::string>> first_seen;
  std::set<std::string> seen;
  for (const auto& r : server.requests())
    if (seen.insert(r.idempotency_key).second) first_seen[r.entity_id].push_back(r.idempotency_key);
  for (const auto& [key, ids] : by_key) {
    INFO(key);
    std::vector<std::string> expected;
    for (const auto id : ids) expected.push_back(id.to_string());
    CHECK(first_seen[key] == expected);
  }

  for (const auto& [id, what] : kind_of) {
    INFO(what << " " << id.to_string());
    const auto e = box.find(id).value().value();
    if (what == "reject") {
      CHECK(e.status == outbox::status::dead);
      CHECK(e.attempts == 1);
      CHECK(e.last_error == "HTTP 422: entry out of range");
    } else if (what == "down") {
      CHECK(e.status == outbox::status::dead);
      CHECK(e.attempts == 4);
      CHECK(e.last_error == "HTTP 503");
    } else {
      CHECK(e.status == outbox::status::completed);
      CHECK(e.remote_id == "/entries/" + id.to_string());
      CHECK(e.attempts == (what == "flaky" ? 3 : what == "timeout-once" ? 2 : 1));
    }
  }
}

TEST_CASE("a stopped server uses no attempts; events are delivered once it is back", "[http]") {
  http_server server;
  const int port = server.port();
  http_outbox box(outbox::memory_storage(), http_transport(options_for(server)));
  box.set_user("alice");
  server.stop();
  std::vector<outbox::event_id> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(box.enqueue({.type = "steps.saved", .entity_id = "s" + std::to_string(i), .payload = "{}"}).value());
  for (int round = 0; round < 3; ++round) CHECK(box.process_once().unavailable == 5);
  for (const auto id : ids) {
    const auto e = box.find(id).value().value();
    CHECK(e.status == outbox::status::pending);
    CHECK(e.attempts == 0);
  }
  server.start(port);
  drain(box);
  for (const auto id : ids) {
    const auto e = box.find(id).value().value();
    CHECK(e.status == outbox::status::completed);
    CHECK(e.attempts == 1);
  }
  CHECK(server.requests().size() == 5);
}

TEST_CASE("nothing throws out of send: a throwing user function becomes a retryable result", "[http]") {
  http_server server;
  http_options o = options_for(server);
  o.route = [](const outbox::event& e) -> std::string {
    if (e.payload == "bad") throw std::runtime_error("no route for this one");
    return "/fine";
  };
  http_transport t(o);
  event_factory f;
  const auto results = send(t, {f.make("bad"), f.make("{}")});
  CHECK(results[0].outcome == kind::retryable);
  CHECK_THAT(results[0].error, Catch::Contains("no route for this one"));
  CHECK(results[1].outcome == kind::delivered);
}

TEST_CASE("the background runner delivers through the HTTP transport", "[http]") {
  http_server server;
  outbox::options opts;
  opts.batch_size = 8;
  outbox::memory_outbox<http_transport> box(outbox::memory_storage(), http_transport(options_for(server)),
                                            outbox::system_clock(), outbox::exponential_backoff(), opts);
  box.set_user("alice");
  box.start();
  for (int i = 0; i < 40; ++i)
    REQUIRE(box.enqueue({.type = "steps.saved", .entity_id = "s" + std::to_string(i % 5), .payload = "{}"}).has_value());
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (box.stats().value().count(outbox::status::completed) < 40 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  box.stop();
  CHECK(box.stats().value().count(outbox::status::completed) == 40);
  CHECK(server.requests().size() == 40);
}
