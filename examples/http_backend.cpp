// Delivering to a REST backend with the shipped HTTP transport (link outbox::http).
//
//     outbox_http_backend [BASE_URL]      default http://127.0.0.1:8080/v1
//
// Each event is a POST to BASE_URL/<route from its type> with Idempotency-Key = the event id.
// Without a server listening there, the events stay pending: "unavailable" uses no attempt.
#include <outbox/outbox.hpp>
#include <outbox/transport/http.hpp>

#include <chrono>
#include <iostream>
#include <string>

int main(int argc, char** argv) {
  outbox::http_options http;
  http.base_url = argc > 1 ? argv[1] : "http://127.0.0.1:8080/v1";
  http.token = [](bool refresh) { return std::string(refresh ? "fresh-token" : "token"); };  // your login
  http.timeout = std::chrono::seconds(5);
  auto transport = outbox::http_transport::make(http);
  if (!transport) {
    std::cerr << transport.error().what() << '\n';  // a malformed URL is caught here, typed
    return 2;
  }

  outbox::memory_outbox<outbox::http_transport> box(outbox::memory_storage(), std::move(*transport));
  box.on_error([](const outbox::error& e) { std::cerr << e.what() << '\n'; });  // a login that expired
  box.set_user("alice");
  if (!box.enqueue({.type = "steps.hourly.saved", .entity_id = "steps-2026-11-21T09", .payload = R"({"steps":1200})"}))
    return 1;
  const auto report = box.process_once();  // POST /v1/steps/hourly
  std::cout << report.delivered << " delivered, " << report.retried << " to retry, " << report.dead << " dead, "
            << report.unavailable << " waiting for the backend\n";
  return 0;
}
