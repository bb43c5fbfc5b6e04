/// \file
/// Google Benchmark bodies for `outbox::http_transport` behind `outbox::Outbox`, next to plain
/// libcurl sending the same requests (`BM_baseline_raw_curl_multi`), in the same binary, to an
/// HTTP server in this process (cpp-httplib on 127.0.0.1) that answers 201 at once.
///
///     BM_http_transport_deliver/batch:B/in_flight:F   enqueue B events, process_once(): B POSTs, F at a time
///     BM_baseline_raw_curl_multi/batch:B/in_flight:F  the same B POSTs (URL, headers, body) through one
///                                                     curl multi handle, F at a time, no outbox
///
/// Both keep their connections alive across iterations, and open them in one untimed round
/// first: this cpp-httplib accepts with a backlog of 5, so a burst of new connections can wait
/// a second for a SYN to be resent, which says nothing about either client. The server's threads share the machine's
/// cores with the client, so absolute figures say more about the machine than about either side;
/// bench/README.md reports the ratio.

#include <benchmark/benchmark.h>
#include <curl/curl.h>
#include <httplib.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "outbox/outbox.hpp"
#include "outbox/transport/http.hpp"
#include "common.hpp"

namespace {

using namespace outbox_bench;

/// The backend: answers every POST with 201 and a Location, at once.
class instant_server {
 public:
  instant_server() {
    server_.new_task_queue = [] { return new httplib::ThreadPool(40); };  // a worker per connection
    server_.set_keep_alive_max_count(100'000'000);
    server_.set_keep_alive_timeout(60);
    server_.set_tcp_nodelay(true);
    server_.Post(R"(/.*)", [](const httplib::Request& req, httplib::Response& res) {
      res.status = 201;
      res.set_header("Location", "/things/" + req.get_header_value("Idempotency-Key"));
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  instant_server(const instant_server&) = delete;
  instant_server& operator=(const instant_server&) = delete;
  ~instant_server() {
    server_.stop();
    thread_.join();
  }
  [[nodiscard]] bool ok() const { return port_ > 0; }
  [[nodiscard]] std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = -1;
};

instant_server& server() {
  static instant_server s;
  return s;
}

std::size_t batch_arg(const benchmark::State& state) { return static_cast<std::size_t>(state.range(0)); }
std::size_t in_flight_arg(const benchmark::State& state) { return static_cast<std::size_t>(state.range(1)); }

/// One untimed `round` that opens the connections, then the timed ones; `delivered` counts
/// the events `round` delivers and becomes the row's items.
template <class Round>
void timed_rounds(benchmark::State& state, Round& round, std::size_t& delivered, const char* failure) {
  if (!round()) return state.SkipWithError(failure);
  delivered = 0;
  for (auto _ : state) {
    if (!round()) {
      state.SkipWithError(failure);
      break;
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(delivered));
}

// ---- the outbox --------------------------------------------------------------------------------

using http_outbox = outbox::Outbox<outbox::memory_storage, outbox::http_transport>;

void BM_http_transport_deliver(benchmark::State& state) {
  if (!server().ok()) return state.SkipWithError("cannot bind 127.0.0.1");
  outbox::http_options http;
  http.base_url = server().url();
  http.max_in_flight = in_flight_arg(state);
  outbox::options opts;
  opts.batch_size = batch_arg(state);
  http_outbox box(outbox::memory_storage(), outbox::http_transport(http), outbox::system_clock(),
                  outbox::exponential_backoff(), opts);
  box.set_user(user);
  const std::vector<outbox::new_event> pool = make_pool();
  const std::size_t batch = batch_arg(state);
  std::size_t offset = 0;
  std::size_t delivered = 0;
  const auto round = [&] {
    if (!box.enqueue(std::span<const outbox::new_event>(pool).subspan(offset, batch))) return false;
    const outbox::cycle_report report = box.process_once();
    delivered += report.delivered;
    offset = next_offset(offset, batch);
    if (delivered % rebuild_every < batch) (void)box.purge_completed(-std::chrono::hours(1));  // keep memory flat
    return report.delivered == batch;
  };
  timed_rounds(state, round, delivered, "not every event was delivered");
}

// ---- the baseline: the same requests, plain libcurl ---------------------------------------------

/// What a hand-written client sends per event: the request `default_http_request` makes, with
/// libcurl's multi interface and a reused easy handle per slot.
class raw_curl_client {
 public:
  raw_curl_client(std::string base, std::size_t in_flight) : base_(std::move(base)), slots_(in_flight) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    multi_ = curl_multi_init();
    curl_multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS, static_cast<long>(in_flight));
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, static_cast<long>(in_flight));
    for (auto& s : slots_) s.easy = curl_easy_init();
  }
  raw_curl_client(const raw_curl_client&) = delete;
  raw_curl_client& operator=(const raw_curl_client&) = delete;
  ~raw_curl_client() {
    for (auto& s : slots_) {
      curl_easy_cleanup(s.easy);
      curl_slist_free_all(s.headers);
    }
    curl_multi_cleanup(multi_);
  }

  /// POSTs every event; the number answered 201.
  std::size_t send(std::span<const outbox::event> events) {
    std::size_t next = 0, active = 0, created = 0;
    const auto start = [&](slot& s, const outbox::event& e) {
      curl_slist_free_all(s.headers);
      s.headers = nullptr;
      for (const std::string& h : {std::string("Content-Type: application/json"), std::string("Expect:"),
                                   "Idempotency-Key: " + e.id.to_string(), "X-Outbox-Event-Type: " + e.type,
                                   "X-Outbox-Entity-Id: " + e.entity_id, "X-Outbox-Attempt: " + std::to_string(e.attempts)})
        s.headers = curl_slist_append(s.headers, h.c_str());
      const std::string url = base_ + "/steps";
      curl_easy_setopt(s.easy, CURLOPT_URL, url.c_str());
      curl_easy_setopt(s.easy, CURLOPT_POSTFIELDS, e.payload.data());
      curl_easy_setopt(s.easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(e.payload.size()));
      curl_easy_setopt(s.easy, CURLOPT_HTTPHEADER, s.headers);
      curl_easy_setopt(s.easy, CURLOPT_WRITEFUNCTION, &discard);
      curl_easy_setopt(s.easy, CURLOPT_NOSIGNAL, 1L);
      curl_easy_setopt(s.easy, CURLOPT_PRIVATE, &s);
      curl_multi_add_handle(multi_, s.easy);
      s.busy = true;
      ++active;
    };
    for (auto& s : slots_)
      if (next < events.size()) start(s, events[next++]);
    while (active > 0) {
      int running = 0;
      curl_multi_perform(multi_, &running);
      int queued = 0;
      bool done = false;
      while (CURLMsg* msg = curl_multi_info_read(multi_, &queued)) {
        if (msg->msg != CURLMSG_DONE) continue;
        char* owner = nullptr;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &owner);
        long status = 0;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        created += msg->data.result == CURLE_OK && status == 201;
        curl_multi_remove_handle(multi_, msg->easy_handle);
        auto* s = reinterpret_cast<slot*>(owner);
        s->busy = false;
        --active;
        done = true;
        if (next < events.size()) start(*s, events[next++]);
      }
      if (active > 0 && !done) curl_multi_poll(multi_, nullptr, 0, 1000, nullptr);
    }
    return created;
  }

 private:
  struct slot {
    CURL* easy = nullptr;
    curl_slist* headers = nullptr;
    bool busy = false;
  };
  static std::size_t discard(char*, std::size_t size, std::size_t count, void*) { return size * count; }

  std::string base_;
  CURLM* multi_ = nullptr;
  std::vector<slot> slots_;
};

void BM_baseline_raw_curl_multi(benchmark::State& state) {
  if (!server().ok()) return state.SkipWithError("cannot bind 127.0.0.1");
  raw_curl_client client(server().url(), in_flight_arg(state));
  const std::vector<outbox::new_event> pool = make_pool();
  const std::size_t batch = batch_arg(state);
  // The events the outbox would hand its transport: ids, the same payloads and entities.
  outbox::event_id_generator ids(7);
  std::vector<outbox::event> events(pool.size());
  for (std::size_t i = 0; i < pool.size(); ++i) {
    events[i] = stored_event(pool[i], ids.next(outbox::system_clock{}.now()), i + 1, outbox::system_clock{}.now());
    events[i].attempts = 1;  // as claimed
  }
  std::size_t offset = 0;
  std::size_t delivered = 0;
  const auto round = [&] {
    const std::size_t created = client.send(std::span<const outbox::event>(events).subspan(offset, batch));
    delivered += created;
    offset = next_offset(offset, batch);
    return created == batch;
  };
  timed_rounds(state, round, delivered, "not every request was answered 201");
}

void http_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"batch", "in_flight"});
  for (const int batch : {1, 10, 100})
    for (const int in_flight : {1, 8, 32}) b->Args({batch, in_flight});
}

}  // namespace

BENCHMARK(BM_http_transport_deliver)->Apply(http_args)->UseRealTime();
BENCHMARK(BM_baseline_raw_curl_multi)->Apply(http_args)->UseRealTime();

BENCHMARK_MAIN();
