// Many relays on one PostgreSQL database: Outbox instances (threads here; processes and
// machines connect the same way), each with its own storage and connection, in one schema.
#include <outbox/outbox.hpp>
#include <outbox/storage/postgres.hpp>
#include <outbox/testing/conformance/fixture.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "support/fixture.hpp"
#include "support/postgres.hpp"

using namespace outbox_test;
using namespace std::chrono_literals;
using outbox::status;
using outbox::testing::storage_fixture;

namespace {

/// What all relays' transports saw: deliveries in order, and which keys were in flight where.
struct delivery_log {
  std::mutex mutex;
  std::map<std::string, int> in_flight;               // ordering key -> relay sending it
  std::map<std::string, std::vector<std::uint64_t>> seqs_by_key;  // first deliveries, in order
  std::map<std::string, int> deliveries;              // event id -> times delivered
  std::set<int> relays_used;
  int overlaps = 0;                                   // a key sent by two relays at once

  [[nodiscard]] std::size_t delivered() {
    std::lock_guard lock(mutex);
    return deliveries.size();
  }
};

/// A transport that delivers everything, slowly enough for relays to overlap, into the log.
struct relay_transport {
  delivery_log* log = nullptr;
  int relay = 0;
  void send(std::span<const outbox::event> batch, std::span<outbox::delivery_result> results) {
    {
      std::lock_guard lock(log->mutex);
      for (const auto& e : batch) {
        auto [it, fresh] = log->in_flight.emplace(e.ordering_key, relay);
        if (!fresh) ++log->overlaps;
        log->relays_used.insert(relay);
      }
    }
    std::this_thread::sleep_for(2ms);
    std::lock_guard lock(log->mutex);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const auto& e = batch[i];
      log->in_flight.erase(e.ordering_key);
      if (log->deliveries[e.id.to_string()]++ == 0) log->seqs_by_key[e.ordering_key].push_back(e.seq);
      results[i] = outbox::delivery_result::delivered("remote-" + std::to_string(e.seq));
    }
  }
};

using relay = outbox::Outbox<outbox::postgres_storage, relay_transport>;

outbox::options relay_options(outbox::duration poll = std::chrono::milliseconds(50)) {
  outbox::options o;
  o.exclusive = false;
  o.batch_size = 8;
  o.poll_interval = poll;
  return o;
}

std::unique_ptr<relay> make_relay(const std::string& schema, delivery_log& log, int id, outbox::options o) {
  auto storage = outbox::postgres_storage::open(*pg_conninfo(), pg_options(schema)).value();
  auto r = std::make_unique<relay>(std::move(storage), relay_transport{&log, id}, outbox::system_clock{},
                                   outbox::exponential_backoff(), o);
  r->set_user("alice");
  return r;
}

std::vector<outbox::event> claim(outbox::postgres_storage& s, const outbox::claim_request& r) {
  std::vector<outbox::event> out;
  auto claimed = s.claim(r, out);
  INFO((claimed ? std::string() : claimed.error().what()));
  REQUIRE(claimed.has_value());
  return out;
}

}  // namespace

TEST_CASE("postgres relays: every event delivered once, each key in order and on one relay at a time",
          "[storage][postgres][relays]") {
  OUTBOX_REQUIRE_POSTGRES();
  schema_owner owner(fresh_schema());
  delivery_log log;
  std::vector<std::unique_ptr<relay>> relays;
  for (int i = 0; i < 3; ++i) relays.push_back(make_relay(owner.schema, log, i, relay_options()));
  for (auto& r : relays) r->start();

  // Two producers, each with a storage (a connection) of its own, appending while relays drain.
  constexpr int keys = 24, per_producer = 240;
  std::vector<std::thread> producers;
  for (int p = 0; p < 2; ++p)
    producers.emplace_back([&, p] {
      auto storage = outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema)).value();
      outbox::Outbox<outbox::postgres_storage, outbox::mock_transport> producer(std::move(storage));
      for (int i = 0; i < per_producer; i += 4) {
        std::vector<outbox::new_event> batch;
        for (int j = i; j < i + 4; ++j)
          batch.push_back({.type = "t", .entity_id = "key-" + std::to_string((j * 7 + p) % keys), .payload = "{}",
                           .user_id = "alice"});
        REQUIRE(producer.enqueue(batch).has_value());
      }
    });
  for (auto& t : producers) t.join();
  REQUIRE(eventually([&] { return log.delivered() == 2 * per_producer; }, 60s));
  for (auto& r : relays) r->stop();

  std::lock_guard lock(log.mutex);
  CHECK(log.overlaps == 0);
  for (const auto& [id, times] : log.deliveries) {
    INFO("event " << id);
    CHECK(times == 1);
  }
  for (const auto& [key, seqs] : log.seqs_by_key) {
    INFO("key " << key);
    CHECK(std::is_sorted(seqs.begin(), seqs.end()));
  }
  CHECK(log.relays_used.size() >= 2);  // the work was shared
  auto stats = relays[0]->stats().value();
  CHECK(stats.count(status::completed) == 2 * per_producer);
}

TEST_CASE("postgres relays: a claim passes over rows another relay holds, without waiting",
          "[storage][postgres][relays]") {
  OUTBOX_REQUIRE_POSTGRES();
  storage_fixture f;
  temp_pg_storage a;
  auto b = outbox::postgres_storage::open(*pg_conninfo(), pg_options(a.postgres_storage::schema())).value();
  std::vector<outbox::event> batch = {f.make("alice", "k1"), f.make("alice", "k2"), f.make("alice", "k3")};
  REQUIRE(a.append(batch).has_value());
  // Another transaction holds k1's head (as a relay's claim in progress does).
  raw_pg holder;
  holder.exec("BEGIN");
  holder.exec("SELECT seq FROM " + a.postgres_storage::schema() + ".events WHERE ordering_key = 'k1' FOR UPDATE");
  auto claimed = std::async(std::launch::async, [&] { return claim(b, f.claim_at("alice", f.t0)); });
  REQUIRE(claimed.wait_for(10s) == std::future_status::ready);  // it did not wait for the lock
  auto got = claimed.get();
  REQUIRE(got.size() == 2);
  CHECK(got[0].ordering_key == "k2");
  CHECK(got[1].ordering_key == "k3");
  holder.exec("ROLLBACK");
  auto rest = claim(a, f.claim_at("alice", f.t0));
  REQUIRE(rest.size() == 1);
  CHECK(rest[0].ordering_key == "k1");
  CHECK(claim(a, f.claim_at("alice", f.t0)).empty());  // never handed out twice
}

TEST_CASE("postgres relays: a dead relay's claim returns when its lease ends; its late result is fenced off",
          "[storage][postgres][relays]") {
  OUTBOX_REQUIRE_POSTGRES();
  storage_fixture f;
  temp_pg_storage first;
  auto second = outbox::postgres_storage::open(*pg_conninfo(), pg_options(first.postgres_storage::schema())).value();
  std::vector<outbox::event> batch = {f.make("alice", "k"), f.make("alice", "k")};
  REQUIRE(first.append(batch).has_value());
  auto stale = claim(first, f.claim_at("alice", f.t0, 10, 30s));
  REQUIRE(stale.size() == 1);
  CHECK(claim(second, f.claim_at("alice", f.t0 + 10s)).empty());  // in flight: the key waits
  auto again = claim(second, f.claim_at("alice", f.t0 + 31s));     // the lease ended
  REQUIRE(again.size() == 1);
  CHECK(again[0].id == stale[0].id);
  CHECK(again[0].lease != stale[0].lease);
  CHECK(again[0].attempts == 2);
  outbox::outcome late[] = {storage_fixture::complete(stale[0], f.t0 + 32s)};
  CHECK(first.record(late).value() == 0);  // the expired claim's result changes nothing
  CHECK_FALSE(late[0].applied);
  outbox::outcome current[] = {storage_fixture::fail(again[0], f.t0 + 33s, f.t0 + 60s)};
  CHECK(second.record(current).value() == 1);
  auto e = second.find(stale[0].id).value().value();
  CHECK(e.status == status::failed);
  CHECK(e.remote_id.empty());
}

TEST_CASE("postgres relays: an exclusive outbox's start-up release leaves live relays' claims alone",
          "[storage][postgres][relays]") {
  OUTBOX_REQUIRE_POSTGRES();
  storage_fixture f;
  schema_owner owner(fresh_schema());
  auto live = outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema)).value();
  std::vector<outbox::event> batch = {f.make("alice", "live"), f.make("alice", "gone")};
  REQUIRE(live.append(batch).has_value());
  const auto now = outbox::system_clock{}.now();
  auto held = claim(live, f.claim_at("alice", now, 1, 1h));
  REQUIRE(held.size() == 1);
  {
    auto dying = outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema)).value();
    REQUIRE(claim(dying, f.claim_at("alice", now, 1, 1h)).size() == 1);
  }  // its connection closes: that relay is gone, its claim still says processing for an hour

  delivery_log log;
  outbox::options o = relay_options();
  o.exclusive = true;
  auto starting = make_relay(owner.schema, log, 9, o);
  const auto report = starting->process_once();  // the first cycle releases dead claims
  CHECK(report.claimed == 1);
  CHECK(report.delivered == 1);
  {
    std::lock_guard lock(log.mutex);
    CHECK(log.seqs_by_key.count("gone") == 1);
    CHECK(log.seqs_by_key.count("live") == 0);
  }
  auto still = live.find(held[0].id).value().value();
  CHECK(still.status == status::processing);
  CHECK(still.lease == held[0].lease);
  outbox::outcome done[] = {storage_fixture::complete(held[0], now)};
  CHECK(live.record(done).value() == 1);  // the live relay's claim was never taken from it
}

TEST_CASE("postgres relays: an idle relay wakes on another process's append (LISTEN/NOTIFY)",
          "[storage][postgres][relays]") {
  OUTBOX_REQUIRE_POSTGRES();
  schema_owner owner(fresh_schema());
  delivery_log log;
  auto idle = make_relay(owner.schema, log, 1, relay_options(std::chrono::hours(1)));
  idle->start();
  // Let it finish its first cycle and go to sleep for the poll interval (an hour).
  REQUIRE(eventually([&] { return idle->stats().has_value(); }));
  std::this_thread::sleep_for(300ms);
  auto producer_storage = outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema)).value();
  outbox::Outbox<outbox::postgres_storage, outbox::mock_transport> producer(std::move(producer_storage));
  REQUIRE(producer.enqueue({.type = "t", .entity_id = "e", .payload = "{}", .user_id = "alice"}).has_value());
  CHECK(eventually([&] { return log.delivered() == 1; }, 10s));
  idle->stop();
}

TEST_CASE("postgres relays: the server ending every connection mid-delivery loses nothing and throws nothing",
          "[storage][postgres][relays][errors]") {
  OUTBOX_REQUIRE_POSTGRES();
  schema_owner owner(fresh_schema());
  delivery_log log;
  outbox::options o = relay_options();
  o.lease = std::chrono::seconds(2);  // a claim whose record was cut off comes back soon
  std::vector<std::unique_ptr<relay>> relays;
  for (int i = 0; i < 2; ++i) {
    relays.push_back(make_relay(owner.schema, log, i, o));
    relays.back()->start();
  }
  raw_pg admin;
  const std::string admin_pid = admin.exec("SELECT pg_backend_pid()");
  auto end_every_connection = [&] {
    admin.exec("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
               "AND backend_type = 'client backend' AND pid <> " + admin_pid);
  };

  auto storage = outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema)).value();
  outbox::Outbox<outbox::postgres_storage, outbox::mock_transport> producer(std::move(storage));
  std::set<std::string> acknowledged;
  for (int i = 0; i < 120; ++i) {
    if (i % 30 == 15) end_every_connection();
    auto id = producer.enqueue({.type = "t", .entity_id = "key-" + std::to_string(i % 7), .payload = "{}",
                                .user_id = "alice"});
    if (id) acknowledged.insert(id->to_string());  // a refused one is the caller's to retry
    std::this_thread::sleep_for(1ms);
  }
  end_every_connection();
  CHECK(acknowledged.size() >= 110);
  REQUIRE(eventually([&] {
    std::lock_guard lock(log.mutex);
    for (const auto& id : acknowledged)
      if (!log.deliveries.count(id)) return false;
    return true;
  }, 60s));
  for (auto& r : relays) r->stop();
  std::lock_guard lock(log.mutex);
  for (const auto& [key, seqs] : log.seqs_by_key) {
    INFO("key " << key);
    CHECK(std::is_sorted(seqs.begin(), seqs.end()));
  }
}
