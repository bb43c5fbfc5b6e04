// A service on PostgreSQL: the application writes each order and its outbox event in one
// transaction on its own connection, and two relays (each an Outbox with a connection of its
// own) deliver the events from the same database, each event to one of them, each order's
// events in order.
//
//   outbox_postgres_service CONNINFO        e.g. "host=/run/postgresql dbname=app"
//
// Uses (and leaves) the schema `outbox_example`. Exits 0 once every order's event is delivered,
// 1 if one is missing after 30 s, 2 if the database cannot be used.
#include <outbox/outbox.hpp>
#include <outbox/storage/postgres.hpp>

#include <libpq-fe.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

/// Stands in for an HTTP endpoint or a broker: prints what it delivers.
struct printing_transport {
  std::string name;
  std::atomic<int>* delivered = nullptr;
  void send(std::span<const outbox::event> batch, std::span<outbox::delivery_result> results) {
    static std::mutex print;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      {
        std::lock_guard lock(print);
        std::printf("%s delivers %s for %s (event %s)\n", name.c_str(), batch[i].type.c_str(),
                    batch[i].entity_id.c_str(), batch[i].id.to_string().c_str());
      }
      results[i] = outbox::delivery_result::delivered();
      ++*delivered;
    }
  }
};

using relay = outbox::Outbox<outbox::postgres_storage, printing_transport>;

bool exec(PGconn* conn, const char* sql) {
  PGresult* r = PQexec(conn, sql);
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok) std::fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
  PQclear(r);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CONNINFO\n", argv[0]);
    return 2;
  }
  const std::string conninfo = argv[1];
  outbox::postgres_options options;
  options.schema = "outbox_example";

  // ---- the application: its own connection, its rows and the outbox events in one transaction
  PGconn* app = PQconnectdb(conninfo.c_str());
  if (PQstatus(app) != CONNECTION_OK) {
    std::fprintf(stderr, "cannot connect: %s", PQerrorMessage(app));
    PQfinish(app);
    return 2;
  }
  int status = 2;
  {
    auto adopted = outbox::postgres_storage::adopt(app, options);
    if (!adopted) {
      std::fprintf(stderr, "%s\n", adopted.error().what().c_str());
      PQfinish(app);
      return 2;
    }
    outbox::Outbox<outbox::postgres_storage, printing_transport> writer(std::move(*adopted));
    if (!exec(app, "CREATE TABLE IF NOT EXISTS outbox_example.orders (id text PRIMARY KEY, total integer)") ||
        !exec(app, "TRUNCATE outbox_example.orders")) {
      PQfinish(app);
      return 2;
    }
    // Events of earlier runs are already delivered; count this run's only.
    std::atomic<int> delivered{0};
    const int orders = 5;
    for (int i = 1; i <= orders; ++i) {
      const std::string id = "order-" + std::to_string(i);
      auto tx = writer.storage().transaction();
      const char* values[] = {id.c_str()};
      PGresult* r = PQexecParams(app, "INSERT INTO outbox_example.orders (id, total) VALUES ($1, 42)", 1, nullptr,
                                 values, nullptr, nullptr, 0);
      PQclear(r);
      // Two events per order, delivered in this order by whichever relay takes them.
      auto placed = writer.enqueue({.type = "order.placed", .entity_id = id, .payload = "{}", .user_id = "shop"});
      auto paid = writer.enqueue({.type = "order.paid", .entity_id = id, .payload = "{}", .user_id = "shop"});
      if (!placed || !paid || !tx.commit()) {
        std::fprintf(stderr, "saving %s failed\n", id.c_str());
        PQfinish(app);
        return 2;
      }
    }

    // ---- the relays: two Outbox instances, each with a connection of its own
    outbox::options relay_options;
    relay_options.exclusive = false;  // they share the database
    relay_options.poll_interval = 1s;
    std::vector<std::unique_ptr<relay>> relays;
    for (const char* name : {"relay-a", "relay-b"}) {
      auto storage = outbox::postgres_storage::open(conninfo, options);
      if (!storage) {
        std::fprintf(stderr, "%s\n", storage.error().what().c_str());
        PQfinish(app);
        return 2;
      }
      relays.push_back(std::make_unique<relay>(std::move(*storage), printing_transport{name, &delivered},
                                               outbox::system_clock{}, outbox::exponential_backoff(), relay_options));
      relays.back()->set_user("shop");
      relays.back()->start();
    }
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (delivered < 2 * orders && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
    for (auto& r : relays) r->stop();
    std::printf("%d of %d events delivered\n", delivered.load(), 2 * orders);
    status = delivered == 2 * orders ? 0 : 1;
  }
  PQfinish(app);
  return status;
}
