// A transport of your own: map your backend's answers onto outbox's four outcomes.
//
// Here the "backend" is a function standing in for an HTTP client, so the example runs
// anywhere; replace `post` with your client call. The mapping is the part to copy:
//   2xx               -> delivered (with the id the server gave)
//   429 / 503         -> retryable, honouring the server's Retry-After
//   other 4xx         -> permanent: the event goes to dead, it will not get better by retrying
//   no connection     -> unavailable: offline, no attempt is used
//   other 5xx         -> retryable, backoff decides when
#include <outbox/outbox.hpp>

#include <chrono>
#include <iostream>
#include <optional>
#include <string>

namespace {

struct http_response {
  int status = 0;                    // 0: no connection
  std::string body;                  // the created resource's id on 201
  std::optional<int> retry_after_s;  // from the Retry-After header
};

/// Stands in for an HTTP POST. Sends the event id as Idempotency-Key so the server can drop
/// the duplicates an at-least-once outbox may send after a crash.
http_response post(const std::string& path, const std::string& idempotency_key, const std::string& json) {
  (void)idempotency_key;
  if (json.find("\"kg\":-") != std::string::npos) return {422, "weight must be positive", std::nullopt};
  if (path == "/v1/heart_rate") return {429, "slow down", 120};
  return {201, "srv-" + idempotency_key.substr(0, 8), std::nullopt};
}

class http_transport {
 public:
  explicit http_transport(std::string base) : base_(std::move(base)) {}

  void send(std::span<const outbox::event> batch, std::span<outbox::delivery_result> results) {
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const outbox::event& e = batch[i];
      const http_response r = post(base_ + e.type.substr(0, e.type.find('.')), e.id.to_string(), e.payload);
      results[i] = map(r);
    }
  }

 private:
  static outbox::delivery_result map(const http_response& r) {
    using outbox::delivery_result;
    if (r.status == 0) return delivery_result::unavailable("no connection");
    if (r.status >= 200 && r.status < 300) return delivery_result::delivered(r.body);
    const std::string why = std::to_string(r.status) + " " + r.body;
    if (r.status == 429 || r.status == 503) {
      std::optional<outbox::duration> hint;
      if (r.retry_after_s) hint = std::chrono::seconds(*r.retry_after_s);
      return delivery_result::retryable(why, hint);
    }
    if (r.status >= 400 && r.status < 500) return delivery_result::permanent(why);
    return delivery_result::retryable(why);
  }

  std::string base_;
};

static_assert(outbox::transport<http_transport>);

}  // namespace

int main() {
  outbox::Outbox<outbox::memory_storage, http_transport> box(outbox::memory_storage(), http_transport("/v1/"));
  box.set_user("alice");
  box.on_delivered([](const outbox::event& e, const outbox::delivery_result& r) {
    std::cout << "delivered " << e.type << " as " << r.remote_id << '\n';
  });
  box.on_failed([](const outbox::event& e, const outbox::delivery_result& r) {
    std::cout << "retry    " << e.type << " after the server's hint (" << r.error << ")\n";
  });
  box.on_dead([](const outbox::event& e, const outbox::delivery_result& r) {
    std::cout << "dead     " << e.type << ": " << r.error << '\n';
  });
  auto a = box.enqueue({.type = "weight.saved", .entity_id = "w1", .payload = R"({"kg":71.4})"});
  auto b = box.enqueue({.type = "weight.saved", .entity_id = "w2", .payload = R"({"kg":-3})"});
  auto c = box.enqueue({.type = "heart_rate.saved", .entity_id = "h1", .payload = R"({"bpm":61})"});
  if (!a || !b || !c) return 1;
  const auto report = box.process_once();
  const auto retry_at = box.find(*c).value()->retry_after;
  const bool hint_honoured = retry_at - box.find(*c).value()->updated_at == std::chrono::seconds(120);
  return report.delivered == 1 && report.dead == 1 && report.retried == 1 && hint_honoured ? 0 : 1;
}
