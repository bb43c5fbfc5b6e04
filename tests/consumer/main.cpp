// A tiny outside program: it only knows outbox as a package.
#include <outbox/outbox.hpp>
#ifdef CONSUMER_WITH_SQLITE
#include <outbox/storage/sqlite.hpp>
#endif
#ifdef CONSUMER_WITH_HTTP
#include <outbox/transport/http.hpp>
#endif
#ifdef CONSUMER_WITH_NATS
#include <outbox/transport/nats.hpp>
#endif

int main() {
  outbox::mock_transport backend;
  outbox::memory_outbox<outbox::mock_transport> box(outbox::memory_storage(), backend);
  box.set_user("consumer");
  if (!box.enqueue({.type = "consumer.ran", .entity_id = "c1", .payload = "{}"})) return 1;
  if (box.process_once().delivered != 1) return 2;
#ifdef CONSUMER_WITH_SQLITE
  auto db = outbox::sqlite_storage::open(":memory:");
  if (!db) return 3;
#endif
#ifdef CONSUMER_WITH_HTTP
  outbox::http_options http;
  http.base_url = "http://127.0.0.1:8080";
  if (!outbox::http_transport::make(http)) return 4;  // links libcurl; sends nothing
#endif
#ifdef CONSUMER_WITH_NATS
  outbox::nats_options nats;
  nats.urls.clear();  // refused before anything connects; the call still links nats.c
  auto refused = outbox::nats_transport::connect(nats);
  if (refused || refused.error() != outbox::errc::invalid_argument) return 5;
#endif
  return 0;
}
