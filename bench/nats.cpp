// The NATS JetStream transport against raw nats.c doing the same job: the same events (subject,
// headers, payload) published with js_PublishMsgAsync and their acks awaited, one batch at a
// time. Both talk to one nats-server this binary starts (JetStream on, a private store
// directory, 127.0.0.1, an ephemeral port); it shares the machine's cores with the client, so
// the absolute figures are the pair's, and the ratio is the number to read.
#include "common.hpp"

#include <outbox/transport/nats.hpp>

#include <atomic>
#include <memory>

#include "support/nats_server.hpp"

namespace {

const std::string stream = "BENCH";

/// One server for the whole run, started on first use; null when nats-server is missing.
struct jetstream {
  outbox_test::nats_server server;
  outbox_test::stream_admin admin{server.url()};
  // Bounded, so a long run does not fill the disk: the oldest messages make room.
  jetstream() { admin.create(stream, {"outbox.>"}, 200'000); }
};

jetstream* shared_jetstream() {
  static const std::unique_ptr<jetstream> js = []() -> std::unique_ptr<jetstream> {
    if (!outbox_test::nats_server_available()) return nullptr;
    return std::make_unique<jetstream>();
  }();
  return js.get();
}

/// A batch of `n` events on distinct entities; `renew` gives them fresh ids, so every round
/// stores new messages rather than meeting the duplicate window.
struct batch_maker {
  std::vector<outbox::event> events;
  outbox::event_id_generator ids;

  explicit batch_maker(std::size_t n) : events(n) {
    for (std::size_t i = 0; i < n; ++i) {
      auto& e = events[i];
      e.type = outbox_bench::event_type;
      e.entity_id = outbox_bench::entity_name(i);
      e.ordering_key = e.entity_id;
      e.user_id = outbox_bench::user;
      e.payload = std::string(outbox_bench::payload_bytes, 'x');
      e.attempts = 1;
    }
  }
  void renew() {
    const auto now = outbox::system_clock{}.now();
    for (auto& e : events) e.id = ids.next(now);
  }
};

/// The second argument: 1 writes each message at once (send_asap), 0 lets nats.c's flusher
/// gather a batch's writes.
bool send_asap(const benchmark::State& state) { return state.range(1) != 0; }

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void BM_nats_transport_send(benchmark::State& state) {
  jetstream* js = shared_jetstream();
  if (js == nullptr) return state.SkipWithError("nats-server not found (Debian: apt-get install nats-server)");
  outbox::nats_options options;
  options.urls = {js->server.url()};
  options.send_asap = send_asap(state);
  outbox::nats_transport transport(options);
  batch_maker batch(static_cast<std::size_t>(state.range(0)));
  std::vector<outbox::delivery_result> results(batch.events.size());
  for (auto _ : state) {
    batch.renew();
    const auto start = std::chrono::steady_clock::now();
    transport.send(batch.events, results);
    state.SetIterationTime(seconds_since(start));
    for (const auto& r : results) {
      if (r.outcome != outbox::delivery_result::kind::delivered) return state.SkipWithError(r.error.c_str());
    }
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

/// Raw nats.c: a connection and JetStream context of its own, async publishes with the same
/// subject and headers, then js_PublishAsyncComplete. It only counts failed acks (an error
/// handler), where the transport also maps each ack back to its event.
void BM_baseline_raw_nats_publish_async(benchmark::State& state) {
  jetstream* js = shared_jetstream();
  if (js == nullptr) return state.SkipWithError("nats-server not found (Debian: apt-get install nats-server)");
  natsOptions* raw_options = nullptr;
  natsOptions_Create(&raw_options);
  outbox::detail::nats::options_ptr connect_options(raw_options);
  natsOptions_SetURL(raw_options, js->server.url().c_str());
  natsOptions_SetSendAsap(raw_options, send_asap(state));
  natsConnection* raw_connection = nullptr;
  if (natsConnection_Connect(&raw_connection, raw_options) != NATS_OK) return state.SkipWithError("cannot connect");
  outbox::detail::nats::connection_ptr connection(raw_connection);
  static std::atomic<int> failures{0};
  jsOptions js_options;
  jsOptions_Init(&js_options);
  js_options.PublishAsync.ErrHandler = [](jsCtx*, jsPubAckErr*, void*) { failures.fetch_add(1); };
  jsCtx* raw_context = nullptr;
  if (natsConnection_JetStream(&raw_context, raw_connection, &js_options) != NATS_OK)
    return state.SkipWithError("no JetStream context");
  outbox::detail::nats::context_ptr context(raw_context);
  jsPubOptions wait;
  jsPubOptions_Init(&wait);
  wait.MaxWait = 5000;

  batch_maker batch(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    batch.renew();
    const auto start = std::chrono::steady_clock::now();
    for (const auto& e : batch.events) {
      const std::string subject = "outbox." + e.type;
      const std::string id = e.id.to_string();
      const std::string attempt = std::to_string(e.attempts);
      natsMsg* msg = nullptr;
      natsMsg_Create(&msg, subject.c_str(), nullptr, e.payload.data(), static_cast<int>(e.payload.size()));
      natsMsgHeader_Set(msg, outbox::nats_headers::msg_id, id.c_str());
      natsMsgHeader_Set(msg, outbox::nats_headers::type, e.type.c_str());
      natsMsgHeader_Set(msg, outbox::nats_headers::entity_id, e.entity_id.c_str());
      natsMsgHeader_Set(msg, outbox::nats_headers::user_id, e.user_id.c_str());
      natsMsgHeader_Set(msg, outbox::nats_headers::ordering_key, e.ordering_key.c_str());
      natsMsgHeader_Set(msg, outbox::nats_headers::attempt, attempt.c_str());
      const natsStatus s = js_PublishMsgAsync(context.get(), &msg, nullptr);
      natsMsg_Destroy(msg);  // null when nats.c took it
      if (s != NATS_OK) return state.SkipWithError("publish failed");
    }
    if (js_PublishAsyncComplete(context.get(), &wait) != NATS_OK) return state.SkipWithError("acks timed out");
    state.SetIterationTime(seconds_since(start));
    if (failures.load() != 0) return state.SkipWithError("a publish was not acknowledged");
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

}  // namespace

BENCHMARK(BM_nats_transport_send)->ArgNames({"batch", "send_asap"})->ArgsProduct({{1, 10, 100}, {0, 1}})->UseManualTime();
BENCHMARK(BM_baseline_raw_nats_publish_async)
    ->ArgNames({"batch", "send_asap"})->ArgsProduct({{1, 10, 100}, {0, 1}})->UseManualTime();

BENCHMARK_MAIN();
