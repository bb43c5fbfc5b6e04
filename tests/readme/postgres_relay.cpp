// README wrapper: the block is the body of a function given the database's conninfo, the HTTP
// transport's options and the user whose events the relay delivers; it runs the relay until
// it returns.
#include <outbox/outbox.hpp>
#include <outbox/storage/postgres.hpp>
#include <outbox/transport/http.hpp>

#include <chrono>
#include <string>
#include <utility>

void run_relay(const std::string& conninfo, const outbox::http_options& http, const std::string& tenant) {
  // {snippet}
}
