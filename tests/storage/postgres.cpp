// outbox::postgres_storage on a real server (the test run's, see tests/support/postgres.hpp):
// the conformance suite, then what a server adds: the schema and its versions, adopted
// connections and their transactions, typed errors, reconnection.
#include <outbox/storage/postgres.hpp>
#include <outbox/testing/storage_conformance.hpp>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "support/fixture.hpp"
#include "support/postgres.hpp"

using namespace outbox_test;
using outbox::errc;
using outbox::status;

namespace {
struct postgres_storage_factory {
  using storage_type = temp_pg_storage;
  temp_pg_storage make() { return temp_pg_storage(); }
};
}  // namespace

TEST_CASE("postgres: storage conformance", "[storage][postgres][conformance]") {
  OUTBOX_REQUIRE_POSTGRES();
  outbox::testing::run_storage_conformance<postgres_storage_factory>();
}

TEST_CASE("postgres: entity storage conformance", "[storage][postgres][conformance][entity]") {
  OUTBOX_REQUIRE_POSTGRES();
  outbox::testing::run_entity_storage_conformance<postgres_storage_factory>();
}

static_assert(outbox::entity_storage<outbox::postgres_storage>);
static_assert(outbox::observable_storage<outbox::postgres_storage>);

namespace {
using outbox::testing::storage_fixture;

std::vector<outbox::event> claim(outbox::postgres_storage& s, const outbox::claim_request& r) {
  std::vector<outbox::event> out;
  REQUIRE(s.claim(r, out).has_value());
  return out;
}

void append(outbox::postgres_storage& s, std::vector<outbox::event>& events) {
  auto done = s.append(events);
  INFO((done ? std::string() : done.error().what()));
  REQUIRE(done.has_value());
}

std::int64_t count_events(raw_pg& raw, const std::string& schema) {
  return raw.number("SELECT count(*) FROM " + schema + ".events");
}
}  // namespace

TEST_CASE("postgres: a schema name that is not a plain identifier is refused before any SQL",
          "[storage][postgres][schema]") {
  for (const char* bad : {"", "Outbox", "out-box", "a;DROP TABLE x", "pg_outbox", "1outbox", "o\"x",
                          "a_very_long_schema_name_that_goes_on_and_on_and_on"}) {
    INFO("schema \"" << bad << "\"");
    // No server needed: the name is checked before connecting.
    auto opened = outbox::postgres_storage::open("host=/nonexistent", pg_options(bad));
    REQUIRE_FALSE(opened.has_value());
    CHECK(opened.error() == errc::invalid_argument);
    CHECK_THROWS_AS(outbox::postgres_storage("host=/nonexistent", pg_options(bad)), outbox::exception);
  }
  auto unreachable = outbox::postgres_storage::open("host=/nonexistent connect_timeout=1", pg_options("fine"));
  REQUIRE_FALSE(unreachable.has_value());
  CHECK(unreachable.error().code == outbox::postgres_errc::connection_lost);
}

TEST_CASE("postgres: the schema lives in its own schema name, created once by relays starting together",
          "[storage][postgres][schema]") {
  OUTBOX_REQUIRE_POSTGRES();
  schema_owner owner(fresh_schema());
  std::vector<std::thread> relays;
  std::atomic<int> opened{0};
  for (int i = 0; i < 4; ++i)
    relays.emplace_back([&] {
      if (outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema))) ++opened;
    });
  for (auto& t : relays) t.join();
  CHECK(opened == 4);
  raw_pg raw;
  CHECK(raw.exec("SELECT value FROM " + owner.schema + ".meta WHERE key = 'schema_version'") ==
        std::to_string(outbox::detail::postgres::schema_version));
  CHECK(raw.number("SELECT count(*) FROM pg_tables WHERE schemaname = '" + owner.schema + "'") == 5);  // meta, events, keys, entities, completed
  CHECK(raw.number("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'events'") == 0);
}

TEST_CASE("postgres: a schema written by a newer version is refused and left untouched",
          "[storage][postgres][schema]") {
  OUTBOX_REQUIRE_POSTGRES();
  storage_fixture f;
  schema_owner owner(fresh_schema());
  {
    auto s = outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema)).value();
    std::vector<outbox::event> batch = {f.make("alice", "k")};
    append(s, batch);
  }
  raw_pg raw;
  raw.exec("UPDATE " + owner.schema + ".meta SET value = '99' WHERE key = 'schema_version'");
  const std::string before = raw.exec("SELECT md5(string_agg(e::text, ',' ORDER BY seq)) FROM " + owner.schema + ".events e");
  auto refused = outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema));
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error() == errc::schema_too_new);
  CHECK(raw.exec("SELECT value FROM " + owner.schema + ".meta WHERE key = 'schema_version'") == "99");
  CHECK(raw.exec("SELECT md5(string_agg(e::text, ',' ORDER BY seq)) FROM " + owner.schema + ".events e") == before);
}

TEST_CASE("postgres: an adopted connection's transaction holds the application's row and the event together",
          "[storage][postgres][adopt]") {
  OUTBOX_REQUIRE_POSTGRES();
  storage_fixture f;
  schema_owner owner(fresh_schema());
  PGconn* app = PQconnectdb(pg_conninfo()->c_str());
  REQUIRE(PQstatus(app) == CONNECTION_OK);
  struct finish {
    PGconn* c;
    ~finish() { PQfinish(c); }
  } closing{app};
  auto s = outbox::postgres_storage::adopt(app, pg_options(owner.schema)).value();
  REQUIRE(s.handle() == app);
  raw_pg raw;
  raw.exec("CREATE TABLE " + owner.schema + ".orders (id text PRIMARY KEY)");
  auto app_insert = [&](const std::string& id) {
    const std::string sql = "INSERT INTO " + owner.schema + ".orders VALUES ($1)";
    const char* values[] = {id.c_str()};
    PGresult* r = PQexecParams(app, sql.c_str(), 1, nullptr, values, nullptr, nullptr, 0);
    CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
  };
  auto orders = [&] { return raw.number("SELECT count(*) FROM " + owner.schema + ".orders"); };

  SECTION("committed: both are stored") {
    auto txn = s.transaction();
    app_insert("o-1");
    std::vector<outbox::event> batch = {f.make("alice", "o-1")};
    append(s, batch);
    CHECK(count_events(raw, owner.schema) == 0);  // not yet visible to others
    REQUIRE(txn.commit().has_value());
    CHECK(orders() == 1);
    CHECK(count_events(raw, owner.schema) == 1);
  }
  SECTION("rolled back (the guard ends without commit): neither is stored") {
    {
      auto txn = s.transaction();
      app_insert("o-1");
      std::vector<outbox::event> batch = {f.make("alice", "o-1")};
      append(s, batch);
    }
    CHECK(orders() == 0);
    CHECK(count_events(raw, owner.schema) == 0);
    std::vector<outbox::event> later = {f.make("alice", "o-2")};
    append(s, later);  // the connection is usable again, outside any transaction
    CHECK(count_events(raw, owner.schema) == 1);
  }
  SECTION("the application's own BEGIN ... ROLLBACK: the event goes with it") {
    PQclear(PQexec(app, "BEGIN"));
    app_insert("o-1");
    std::vector<outbox::event> batch = {f.make("alice", "o-1")};
    append(s, batch);
    PQclear(PQexec(app, "ROLLBACK"));
    CHECK(orders() == 0);
    CHECK(count_events(raw, owner.schema) == 0);
  }
  SECTION("an event refused inside the transaction rolls back only itself") {
    std::vector<outbox::event> first = {f.make("alice", "o-1")};
    append(s, first);
    auto txn = s.transaction();
    app_insert("o-2");
    std::vector<outbox::event> again = {first[0]};
    again[0].seq = 0;
    CHECK_FALSE(s.append(again).has_value());  // its id is taken
    std::vector<outbox::event> second = {f.make("alice", "o-2")};
    append(s, second);
    REQUIRE(txn.commit().has_value());
    CHECK(orders() == 1);
    CHECK(count_events(raw, owner.schema) == 2);
  }
}

TEST_CASE("postgres: server errors arrive typed", "[storage][postgres][errors]") {
  using outbox::detail::postgres::from_sqlstate;
  CHECK(from_sqlstate("53100", "appending", "could not extend file") == errc::disk_full);
  CHECK(from_sqlstate("40001", "x", "y").code == outbox::postgres_errc::serialization_failure);
  CHECK(from_sqlstate("40P01", "x", "y").code == outbox::postgres_errc::serialization_failure);
  CHECK(from_sqlstate("57P01", "x", "y").code == outbox::postgres_errc::server_shutdown);
  CHECK(from_sqlstate("08006", "x", "y").code == outbox::postgres_errc::connection_lost);
  CHECK(from_sqlstate("42P01", "x", "y").code == outbox::postgres_errc::server_error);
  CHECK(outbox::error(outbox::postgres_errc::server_shutdown).what() == "outbox.postgres: server shutting down");
}

TEST_CASE("postgres: a serialization failure in the application's transaction is typed",
          "[storage][postgres][errors]") {
  OUTBOX_REQUIRE_POSTGRES();
  storage_fixture f;
  temp_pg_storage s;
  std::vector<outbox::event> batch = {f.make("alice", "k")};
  append(s, batch);
  auto claimed = claim(s, f.claim_at("alice", f.t0));
  outbox::outcome dead[] = {storage_fixture::kill(claimed[0], f.t0)};
  REQUIRE(s.record(dead).value() == 1);

  auto txn = s.transaction();
  PQclear(PQexec(s.handle(), "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"));
  CHECK(s.find(batch[0].id).has_value());  // the transaction's snapshot is taken here
  raw_pg other;
  other.exec("UPDATE " + s.postgres_storage::schema() + ".events SET last_error = 'changed by another transaction'");
  const outbox::event_id ids[] = {batch[0].id};
  auto reset = s.reset(ids, f.t0);
  REQUIRE_FALSE(reset.has_value());
  CHECK(reset.error().code == outbox::postgres_errc::serialization_failure);
}

TEST_CASE("postgres: a connection the server ended is connected again by the next call",
          "[storage][postgres][errors]") {
  OUTBOX_REQUIRE_POSTGRES();
  storage_fixture f;
  temp_pg_storage s;
  raw_pg admin;
  auto terminate = [&] {
    const int pid = PQbackendPID(s.handle());
    REQUIRE(admin.exec("SELECT pg_terminate_backend(" + std::to_string(pid) + ")") == "t");
    // The server ends the backend asynchronously: wait until it is gone.
    REQUIRE(eventually([&] {
      return admin.number("SELECT count(*) FROM pg_stat_activity WHERE pid = " + std::to_string(pid)) == 0;
    }));
  };

  SECTION("idle: the next call works") {
    terminate();
    std::vector<outbox::event> batch = {f.make("alice", "k")};
    append(s, batch);
    terminate();
    auto claimed = claim(s, f.claim_at("alice", f.t0));
    REQUIRE(claimed.size() == 1);
    terminate();
    outbox::outcome done[] = {storage_fixture::complete(claimed[0], f.t0)};
    CHECK(s.record(done).value() == 1);
    terminate();
    CHECK(s.stats("alice", f.t0).value().count(status::completed) == 1);
  }
  SECTION("inside a transaction: that call fails typed, the transaction is gone, the next call works") {
    {
      auto txn = s.transaction();
      terminate();
      std::vector<outbox::event> batch = {f.make("alice", "k")};
      auto lost = s.append(batch);
      REQUIRE_FALSE(lost.has_value());
      CHECK(lost.error().code.category() == outbox::postgres_category());
      CHECK((lost.error().code == outbox::postgres_errc::server_shutdown ||
             lost.error().code == outbox::postgres_errc::connection_lost));
    }
    std::vector<outbox::event> batch = {f.make("alice", "k2")};
    append(s, batch);
    CHECK(s.stats("alice", f.t0).value().count(status::pending) == 1);
  }
}

TEST_CASE("postgres: concurrent savers in one process share transactions", "[storage][postgres][group]") {
  OUTBOX_REQUIRE_POSTGRES();
  temp_pg_storage s;
  constexpr int threads = 6, each = 30;
  std::vector<std::thread> savers;
  std::atomic<int> failures{0};
  for (int t = 0; t < threads; ++t)
    savers.emplace_back([&, t] {
      outbox::event_id_generator ids;
      for (int i = 0; i < each; ++i) {
        std::vector<outbox::event> one(1);
        one[0].id = ids.next(outbox::system_clock{}.now());
        one[0].type = "t";
        one[0].entity_id = one[0].ordering_key = "k" + std::to_string(t);
        one[0].user_id = "alice";
        if (!s.append(one)) ++failures;
      }
    });
  for (auto& t : savers) t.join();
  CHECK(failures == 0);
  CHECK(s.stats("alice").value().count(status::pending) == threads * each);
  const auto shared = s.commit_stats();
  CHECK(shared.writes == threads * each);
  CHECK(shared.commits < shared.writes);  // some commits served several savers
}
