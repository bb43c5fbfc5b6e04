// outbox::sqlite_storage: the conformance suite, plus what a file on disk adds: reopening,
// schema versions, corrupt files, adopted connections, locks. Group commit and concurrent
// producers: tests/concurrency/storages.cpp, shared with the file storage and run under TSan.
#include <outbox/storage/sqlite.hpp>
#include <outbox/testing/storage_conformance.hpp>

#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <thread>

#include "support/fixture.hpp"
#include "support/small_filesystem.hpp"
#include "support/stats_shape.hpp"
#include "support/temp_sqlite.hpp"

using namespace outbox_test;
using outbox::errc;
using outbox::status;

namespace {
struct sqlite_storage_factory {
  using storage_type = temp_sqlite_storage;
  temp_sqlite_storage make() { return temp_sqlite_storage(); }
};

/// Runs SQL on a raw connection of the test's own.
void raw_exec(const std::filesystem::path& file, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(file.c_str(), &db) == SQLITE_OK);
  char* message = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &message);
  INFO((message ? message : ""));
  sqlite3_free(message);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);
}

/// The first column of the first row of `sql`, on a raw connection of the test's own.
std::int64_t raw_int(const std::filesystem::path& file, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(file.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK);
  const int rc = sqlite3_step(stmt);
  const std::int64_t value = rc == SQLITE_ROW ? sqlite3_column_int64(stmt, 0) : -1;
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_ROW);
  return value;
}
}  // namespace

OUTBOX_STORAGE_CONFORMANCE_TESTS(sqlite_storage_factory)
OUTBOX_ENTITY_STORAGE_CONFORMANCE_TESTS(sqlite_storage_factory)

TEST_CASE("the claim is served by indexes in claim order: no sort, no scan", "[storage][sqlite]") {
  temp_sqlite_storage s;
  const auto plan = s.explain_claim();
  REQUIRE(plan.size() >= 4);
  for (const auto& step : plan) {
    INFO(step);
    CHECK(step.find("TEMP B-TREE") == std::string::npos);
    // A subquery's header line names no table; every table is read by a search.
    if (step.find("SUBQUERY") != std::string::npos) continue;
    CHECK(step.rfind("SEARCH", 0) == 0);
    // The line rows' reads need nothing but an index (state stays a column of the partial ones;
    // the primary key of a WITHOUT ROWID table holds the whole row).
    if (step.find("outbox_keys") != std::string::npos)
      CHECK((step.find("COVERING INDEX") != std::string::npos || step.find("PRIMARY KEY") != std::string::npos));
  }
}

TEST_CASE("audit queries by entity or type read their index in append order: no sort, no scan",
          "[storage][sqlite][query]") {
  temp_sqlite_storage s;
  for (const bool by_entity : {true, false}) {
    for (int filters = 0; filters < 8; ++filters) {  // every mix of status, user and the other field
      outbox::event_query q;
      if (by_entity) q.entity_id = "steps/1";
      else q.type = "steps.saved";
      if (filters & 1) q.status_is = status::dead;
      if (filters & 2) q.user_id = "alice";
      if (filters & 4) {
        if (by_entity) q.type = "steps.saved";
        else q.status_is = status::completed;  // the history: still the type's index
      }
      const std::string index = by_entity ? "USING INDEX outbox_events_entity" : "USING INDEX outbox_events_type";
      const auto plan = s.explain_query(q);
      REQUIRE_FALSE(plan.empty());
      for (const auto& step : plan) {
        INFO(step);
        CHECK(step.rfind("SEARCH outbox_events " + index, 0) == 0);
        CHECK(step.find("TEMP B-TREE") == std::string::npos);
        CHECK(step.find("SCAN") == std::string::npos);
      }
    }
  }
}

TEST_CASE("events, leases and retries survive closing and reopening the file", "[storage][sqlite]") {
  const auto file = temp_path("outbox-reopen.db");
  temp_file_owner cleanup(file);
  outbox::testing::storage_fixture f;
  std::vector<outbox::event> batch = {f.make("alice", "a"), f.make("alice", "b"), f.make("alice", "c")};
  batch[0].payload = std::string("\0\x01binary", 8);
  std::vector<outbox::event> claimed;
  {
    outbox::sqlite_storage s(file.string());
    REQUIRE(s.append(std::span<outbox::event>(batch)).has_value());
    REQUIRE(s.claim(f.claim_at("alice", f.t0, 2, std::chrono::seconds(60)), claimed).value() == 2);
    std::vector<outbox::outcome> failed = {outbox::testing::storage_fixture::fail(claimed[1], f.t0, f.t0 + std::chrono::seconds(30))};
    REQUIRE(s.record(std::span<outbox::outcome>(failed)).value() == 1);
  }  // the process "dies" with "a" in flight
  outbox::sqlite_storage s(file.string());
  const auto a = s.find(batch[0].id).value().value();
  CHECK(a.payload == batch[0].payload);
  CHECK(a.status == status::processing);
  CHECK(a.lease == claimed[0].lease);
  std::vector<outbox::event> again;
  CHECK(s.claim(f.claim_at("alice", f.t0 + std::chrono::seconds(10)), again).value() == 1);  // "c" only
  CHECK(again[0].id == batch[2].id);
  again.clear();
  CHECK(s.claim(f.claim_at("alice", f.t0 + std::chrono::seconds(61)), again).value() == 2);  // lease ran out; retry due
  CHECK(again[0].attempts == 2);
  // The dead claimer's late answer is refused after the restart too.
  std::vector<outbox::outcome> late = {outbox::testing::storage_fixture::complete(claimed[0], f.t0)};
  CHECK(s.record(std::span<outbox::outcome>(late)).value() == 0);
}

TEST_CASE("a database from a newer version is refused and left unchanged", "[storage][sqlite][schema]") {
  const auto file = temp_path("outbox-newer.db");
  temp_file_owner cleanup(file);
  { outbox::sqlite_storage s(file.string()); }
  raw_exec(file, "UPDATE outbox_meta SET value = '99' WHERE key = 'schema_version'; PRAGMA user_version = 99;");
  auto opened = outbox::sqlite_storage::open(file.string());
  REQUIRE_FALSE(opened.has_value());
  CHECK(opened.error() == errc::schema_too_new);
  CHECK_THAT(opened.error().message, Catch::Contains("99"));
  CHECK_THAT(opened.error().message, Catch::Contains("left unchanged"));
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(file.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT value FROM outbox_meta WHERE key = 'schema_version'", -1, &stmt, nullptr) ==
          SQLITE_OK);
  REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0))) == "99");
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  CHECK_THROWS_AS(outbox::sqlite_storage(file.string()), outbox::exception);
}

TEST_CASE("a rollback-journal database from a newer version is left byte-identical", "[storage][sqlite][schema]") {
  const auto file = temp_path("outbox-newer-delete.db");
  temp_file_owner cleanup(file);
  { outbox::sqlite_storage s(file.string()); }
  raw_exec(file, "PRAGMA journal_mode=DELETE; UPDATE outbox_meta SET value = '99' WHERE key = 'schema_version';");
  REQUIRE_FALSE(std::filesystem::exists(file.string() + "-wal"));
  auto bytes = [&] {
    std::ifstream in(file, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  const std::string before = bytes();
  REQUIRE_FALSE(before.empty());
  auto opened = outbox::sqlite_storage::open(file.string());
  REQUIRE_FALSE(opened.has_value());
  CHECK(opened.error() == errc::schema_too_new);
  CHECK_THAT(opened.error().message, Catch::Contains("left unchanged"));
  CHECK(bytes() == before);  // still in rollback-journal mode: the refused open switched nothing to WAL
  CHECK_FALSE(std::filesystem::exists(file.string() + "-wal"));
}

TEST_CASE("a schema-1 database is migrated in place and keeps its events", "[storage][sqlite][schema]") {
  // Schema 1 had a line index partial on status; schema 2 replaces it with a full one.
  const auto file = temp_path("outbox-schema1.db");
  temp_file_owner cleanup(file);
  outbox::testing::storage_fixture f;
  std::vector<outbox::event> events = {f.make("alice", "a"), f.make("alice", "a"), f.make("alice", "b")};
  {
    outbox::sqlite_storage s(file.string());
    REQUIRE(s.append(std::span<outbox::event>(events)));
  }
  raw_exec(file,
           "DROP INDEX outbox_events_line;"
           "CREATE INDEX outbox_events_line ON outbox_events(user_id, ordering_key, seq) WHERE status IN (0, 1, 3);"
           "UPDATE outbox_meta SET value = '1' WHERE key = 'schema_version'; PRAGMA user_version = 1;");
  {
    outbox::sqlite_storage s(file.string());
    std::vector<outbox::event> claimed;
    REQUIRE(s.claim(f.claim_at("alice", f.t0, 10, std::chrono::seconds(60)), claimed).value() == 2);  // heads of a and b
    std::vector<outbox::outcome> done;
    for (const auto& e : claimed) done.push_back(outbox::testing::storage_fixture::complete(e, f.t0));
    REQUIRE(s.record(std::span<outbox::outcome>(done)).value() == 2);
    claimed.clear();
    REQUIRE(s.claim(f.claim_at("alice", f.t0, 10, std::chrono::seconds(60)), claimed).value() == 1);
    CHECK(claimed[0].id == events[1].id);  // a's second event, now its head
  }
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(file.c_str(), &db) == SQLITE_OK);
  auto text = [&](const char* sql) {
    sqlite3_stmt* stmt = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
    std::string value = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    sqlite3_finalize(stmt);
    return value;
  };
  const std::string current = std::to_string(outbox::detail::sqlite::schema_version);
  CHECK(text("SELECT value FROM outbox_meta WHERE key = 'schema_version'") == current);
  CHECK(text("PRAGMA user_version") == current);
  CHECK_THAT(text("SELECT sql FROM sqlite_master WHERE name = 'outbox_events_line'"), !Catch::Contains("WHERE"));
  sqlite3_close(db);
}

TEST_CASE("a schema-2 database is migrated in place: its completed events counted once", "[storage][sqlite][schema]") {
  // Schema 2 counted every status by reading the events; schema 3 keeps the completed counts in
  // outbox_completed and leads the status index with status; schema 4 makes the line indexes
  // partial on their state.
  const auto file = temp_path("outbox-schema2.db");
  temp_file_owner cleanup(file);
  outbox::testing::storage_fixture f;
  std::vector<outbox::event> events = {f.make("alice", "a"), f.make("alice", "b"), f.make("bob", "c"),
                                       f.make("alice", "d")};
  {
    outbox::sqlite_storage s(file.string());
    REQUIRE(s.append(std::span<outbox::event>(events)));
    std::vector<outbox::event> claimed;
    REQUIRE(s.claim(f.claim_at("alice", f.t0, 2), claimed).value() == 2);
    REQUIRE(s.claim(f.claim_at("bob", f.t0), claimed).value() == 1);
    std::vector<outbox::outcome> done = {outbox::testing::storage_fixture::complete(claimed[0], f.t0),
                                         outbox::testing::storage_fixture::kill(claimed[1], f.t0),
                                         outbox::testing::storage_fixture::complete(claimed[2], f.t0)};
    REQUIRE(s.record(std::span<outbox::outcome>(done)).value() == 3);
  }
  raw_exec(file,
           "DROP TABLE outbox_completed; DROP INDEX outbox_events_status;"
           "CREATE INDEX outbox_events_by_status ON outbox_events(user_id, status, seq);"
           "DROP INDEX outbox_keys_claim; DROP INDEX outbox_keys_due;"
           "CREATE INDEX outbox_keys_claim ON outbox_keys(user_id, state, priority DESC, head_seq);"
           "CREATE INDEX outbox_keys_due ON outbox_keys(user_id, state, ready_at);"
           "UPDATE outbox_meta SET value = '2' WHERE key = 'schema_version'; PRAGMA user_version = 2;");
  {
    outbox::sqlite_storage s(file.string());
    auto alice = s.stats(std::string_view("alice"), f.t0).value();
    CHECK(alice.count(status::completed) == 1);
    CHECK(alice.count(status::dead) == 1);
    CHECK(alice.count(status::pending) == 1);
    CHECK(s.stats(std::string_view("bob"), f.t0).value().count(status::completed) == 1);
    CHECK(s.stats(std::nullopt, f.t0).value().count(status::completed) == 2);
    // And counted onwards from there.
    std::vector<outbox::event> claimed;
    REQUIRE(s.claim(f.claim_at("alice", f.t0), claimed).value() == 1);
    std::vector<outbox::outcome> done = {outbox::testing::storage_fixture::complete(claimed[0], f.t0)};
    REQUIRE(s.record(std::span<outbox::outcome>(done)).value() == 1);
    CHECK(s.stats(std::string_view("alice"), f.t0).value().count(status::completed) == 2);
  }
  CHECK(raw_int(file, "SELECT value FROM outbox_meta WHERE key = 'schema_version'") ==
        outbox::detail::sqlite::schema_version);
  CHECK(raw_int(file, "SELECT count(*) FROM sqlite_master WHERE name = 'outbox_events_by_status'") == 0);
  CHECK(raw_int(file, "SELECT count(*) FROM sqlite_master WHERE name = 'outbox_events_status'") == 1);
  CHECK(raw_int(file, "SELECT count(*) FROM sqlite_master WHERE name = 'outbox_keys_claim' AND sql LIKE "
                      "'%WHERE state = 0'") == 1);
  CHECK(raw_int(file, "SELECT count(*) FROM sqlite_master WHERE name = 'outbox_keys_due' AND sql LIKE "
                      "'%WHERE state = 1'") == 1);
}

TEST_CASE("a schema-4 database is migrated in place: its events found by entity and type", "[storage][sqlite][schema]") {
  // Schema 5 adds the indexes of the audit queries.
  const auto file = temp_path("outbox-schema4.db");
  temp_file_owner cleanup(file);
  outbox::testing::storage_fixture f;
  std::vector<outbox::event> events = {f.make("alice", "a", 0, "steps.saved"), f.make("alice", "b", 0, "weight.saved"),
                                       f.make("bob", "a", 0, "steps.saved")};
  {
    outbox::sqlite_storage s(file.string());
    REQUIRE(s.append(std::span<outbox::event>(events)));
  }
  raw_exec(file,
           "DROP INDEX outbox_events_entity; DROP INDEX outbox_events_type;"
           "UPDATE outbox_meta SET value = '4' WHERE key = 'schema_version'; PRAGMA user_version = 4;");
  {
    outbox::sqlite_storage s(file.string());
    outbox::event_query q;
    q.entity_id = "a";
    auto about_a = s.query(q).value();
    REQUIRE(about_a.size() == 2);
    CHECK(about_a[0].id == events[0].id);
    CHECK(about_a[1].id == events[2].id);
    q = {};
    q.type = "weight.saved";
    auto weights = s.query(q).value();
    REQUIRE(weights.size() == 1);
    CHECK(weights[0].id == events[1].id);
  }
  CHECK(raw_int(file, "SELECT value FROM outbox_meta WHERE key = 'schema_version'") ==
        outbox::detail::sqlite::schema_version);
  CHECK(raw_int(file, "PRAGMA user_version") == outbox::detail::sqlite::schema_version);
  CHECK(raw_int(file, "SELECT count(*) FROM sqlite_master WHERE name IN ('outbox_events_entity', "
                      "'outbox_events_type')") == 2);
}

// A connection remembers the events it claimed, to record their outcomes by rowid; the outcome
// still applies only under the lease it carries, whichever connection records it.
TEST_CASE("an outcome applies once, under its lease, recorded by the claiming connection or another",
          "[storage][sqlite]") {
  using fx = outbox::testing::storage_fixture;
  const auto file = temp_path("outbox-two-connections.db");
  temp_file_owner cleanup(file);
  fx f;
  std::vector<outbox::event> events = {f.make("alice", "a"), f.make("alice", "b"), f.make("alice", "c")};
  outbox::sqlite_storage first(file.string(), temp_sqlite_storage::fast());
  outbox::sqlite_storage second(file.string(), temp_sqlite_storage::fast());
  REQUIRE(first.append(std::span<outbox::event>(events)));
  std::vector<outbox::event> claimed;
  REQUIRE(first.claim(f.claim_at("alice", f.t0), claimed).value() == 3);
  auto record = [](outbox::sqlite_storage& s, outbox::outcome o) {
    std::vector<outbox::outcome> one = {std::move(o)};
    return s.record(std::span<outbox::outcome>(one)).value();
  };

  // Recorded by the other connection, then again by the claimer: applied once.
  CHECK(record(second, fx::complete(claimed[0], f.t0, "remote-a")) == 1);
  CHECK(record(first, fx::complete(claimed[0], f.t0, "remote-again")) == 0);
  CHECK(first.find(events[0].id).value()->remote_id == "remote-a");

  // The claimer's leases run out and it claims b and c again: the old leases' outcomes are stale.
  std::vector<outbox::event> again;
  REQUIRE(first.claim(f.claim_at("alice", f.t0 + std::chrono::seconds(61)), again).value() == 2);
  CHECK(record(first, fx::kill(claimed[1], f.t0, "410")) == 0);
  CHECK(record(second, fx::kill(claimed[2], f.t0, "410")) == 0);
  CHECK(first.find(events[1].id).value()->status == status::processing);

  // Under the new leases: b by the claimer, c by the other connection.
  const outbox::timestamp retry = f.t0 + std::chrono::seconds(120);
  CHECK(record(first, fx::fail(again[0], f.t0 + std::chrono::seconds(62), retry, "503")) == 1);
  CHECK(record(second, fx::kill(again[1], f.t0 + std::chrono::seconds(62), "400")) == 1);
  const outbox::event b = first.find(events[1].id).value().value();
  CHECK(b.status == status::failed);
  CHECK(b.last_error == "503");
  CHECK(b.retry_after == retry);
  CHECK(b.lease == 0);
  CHECK(b.attempts == 2);
  const outbox::event c = second.find(events[2].id).value().value();
  CHECK(c.status == status::dead);
  CHECK(c.last_error == "400");
  CHECK(first.stats(std::nullopt, f.t0).value().count(status::completed) == 1);
}

TEST_CASE("completed counts commit and roll back with the outcome, and survive reopening", "[storage][sqlite]") {
  const auto file = temp_path("outbox-counts.db");
  temp_file_owner cleanup(file);
  outbox::testing::storage_fixture f;
  std::vector<outbox::event> events = {f.make("alice", "a"), f.make("alice", "b")};
  {
    outbox::sqlite_storage s(file.string());
    REQUIRE(s.append(std::span<outbox::event>(events)));
    std::vector<outbox::event> claimed;
    REQUIRE(s.claim(f.claim_at("alice", f.t0), claimed).value() == 2);
    {
      auto tx = s.transaction();
      std::vector<outbox::outcome> done = {outbox::testing::storage_fixture::complete(claimed[0], f.t0)};
      REQUIRE(s.record(std::span<outbox::outcome>(done)).value() == 1);
      CHECK(s.stats(std::string_view("alice"), f.t0).value().count(status::completed) == 1);
    }  // not committed: the outcome and its count roll back together
    CHECK(s.stats(std::string_view("alice"), f.t0).value().count(status::completed) == 0);
    CHECK(s.stats(std::string_view("alice"), f.t0).value().count(status::processing) == 2);
    std::vector<outbox::outcome> done = {outbox::testing::storage_fixture::complete(claimed[0], f.t0),
                                         outbox::testing::storage_fixture::complete(claimed[1], f.t0)};
    REQUIRE(s.record(std::span<outbox::outcome>(done)).value() == 2);
  }
  outbox::sqlite_storage s(file.string());
  CHECK(s.stats(std::nullopt, f.t0).value().count(status::completed) == 2);
  CHECK(raw_int(file, "SELECT n FROM outbox_completed WHERE user_id = 'alice'") ==
        raw_int(file, "SELECT count(*) FROM outbox_events WHERE user_id = 'alice' AND status = 2"));
  // stats() reads the kept count; it does not count the completed events again.
  raw_exec(file, "UPDATE outbox_completed SET n = 41 WHERE user_id = 'alice'");
  CHECK(s.stats(std::nullopt, f.t0).value().count(status::completed) == 41);
}

TEST_CASE("kept counts follow this connection's transactions and another connection's commits", "[storage][sqlite]") {
  const auto file = temp_path("outbox-kept-counts.db");
  temp_file_owner cleanup(file);
  outbox::testing::storage_fixture f;
  outbox::sqlite_storage s(file.string());
  auto pending = [&] { return s.stats(std::string_view("alice"), f.t0).value().count(status::pending); };
  std::vector<outbox::event> first = {f.make("alice", "a"), f.make("alice", "b"), f.make("alice", "c")};
  REQUIRE(s.append(std::span<outbox::event>(first)));
  CHECK(pending() == 3);  // counted, and kept from here on

  SECTION("a transaction_guard's writes count inside it, and after it only if it commits") {
    {
      auto tx = s.transaction();
      std::vector<outbox::event> more = {f.make("alice", "d")};
      REQUIRE(s.append(std::span<outbox::event>(more)));
      CHECK(pending() == 4);  // its own uncommitted event
    }  // rolled back
    CHECK(pending() == 3);
    {
      auto tx = s.transaction();
      std::vector<outbox::event> more = {f.make("alice", "e")};
      REQUIRE(s.append(std::span<outbox::event>(more)));
      REQUIRE(tx.commit());
    }
    CHECK(pending() == 4);
  }

  SECTION("another connection's commit is counted") {
    raw_exec(file, "UPDATE outbox_events SET status = 4 WHERE seq = 1");
    auto alice = s.stats(std::string_view("alice"), f.t0).value();
    CHECK(alice.count(status::pending) == 2);
    CHECK(alice.count(status::dead) == 1);
    raw_exec(file, "DELETE FROM outbox_events WHERE seq = 2");
    CHECK(pending() == 1);
    CHECK(s.stats(std::nullopt, f.t0).value().total() == 2);
  }
}

TEST_CASE("stats read no history: their plans search indexes and never scan the events", "[storage][sqlite]") {
  temp_sqlite_storage s;
  const auto plan = s.explain_stats();
  REQUIRE(plan.size() >= 6);
  for (const auto& step : plan) {
    INFO(step);
    // outbox_events is "e" in the join of the oldest due event; "SCAN k" reads the line rows,
    // one per ordering key with undelivered events.
    CHECK(step.find("SCAN outbox_events") == std::string::npos);
    CHECK(step.find("SCAN e") == std::string::npos);
  }
}

TEST_CASE("a file that is not a database is a typed error", "[storage][sqlite][schema]") {
  const auto file = temp_path("outbox-garbage.db");
  temp_file_owner cleanup(file);
  {
    std::ofstream out(file, std::ios::binary);
    for (int i = 0; i < 4096; ++i) out.put(static_cast<char>(i * 7 + 3));
  }
  auto opened = outbox::sqlite_storage::open(file.string());
  REQUIRE_FALSE(opened.has_value());
  CHECK(opened.error() == errc::corrupt_data);
  CHECK_THAT(opened.error().what(), Catch::Contains(file.string()));
}

TEST_CASE("an adopted connection: the app's row and the outbox event commit or roll back together",
          "[storage][sqlite][adopt]") {
  const auto file = temp_path("outbox-adopt.db");
  temp_file_owner cleanup(file);
  sqlite3* app = nullptr;
  REQUIRE(sqlite3_open(file.c_str(), &app) == SQLITE_OK);
  REQUIRE(sqlite3_exec(app, "CREATE TABLE notes(id INTEGER PRIMARY KEY, text TEXT)", nullptr, nullptr, nullptr) ==
          SQLITE_OK);
  {
    auto s = outbox::sqlite_storage::adopt(app).value();
    outbox::testing::storage_fixture f;
    auto count = [&](const char* sql) {
      sqlite3_stmt* stmt = nullptr;
      REQUIRE(sqlite3_prepare_v2(app, sql, -1, &stmt, nullptr) == SQLITE_OK);
      REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
      const int n = sqlite3_column_int(stmt, 0);
      sqlite3_finalize(stmt);
      return n;
    };

    SECTION("through the storage's transaction guard") {
      std::vector<outbox::event> rolled = {f.make("alice", "note-1")};
      {
        auto tx = s.transaction();
        REQUIRE(sqlite3_exec(app, "INSERT INTO notes(text) VALUES('draft')", nullptr, nullptr, nullptr) == SQLITE_OK);
        REQUIRE(s.append(std::span<outbox::event>(rolled)).has_value());
      }  // no commit: rolls back
      CHECK(count("SELECT count(*) FROM notes") == 0);
      CHECK_FALSE(s.find(rolled[0].id).value().has_value());

      std::vector<outbox::event> kept = {f.make("alice", "note-2")};
      {
        auto tx = s.transaction();
        REQUIRE(sqlite3_exec(app, "INSERT INTO notes(text) VALUES('final')", nullptr, nullptr, nullptr) == SQLITE_OK);
        REQUIRE(s.append(std::span<outbox::event>(kept)).has_value());
        REQUIRE(tx.commit().has_value());
      }
      CHECK(count("SELECT count(*) FROM notes") == 1);
      CHECK(s.find(kept[0].id).value().has_value());
    }

    SECTION("inside the application's own BEGIN ... ROLLBACK") {
      std::vector<outbox::event> rolled = {f.make("alice", "note-3")};
      REQUIRE(sqlite3_exec(app, "BEGIN; INSERT INTO notes(text) VALUES('x');", nullptr, nullptr, nullptr) == SQLITE_OK);
      REQUIRE(s.append(std::span<outbox::event>(rolled)).has_value());
      REQUIRE(sqlite3_exec(app, "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK);
      CHECK(count("SELECT count(*) FROM notes") == 0);
      CHECK(count("SELECT count(*) FROM outbox_events") == 0);
    }
  }
  CHECK(sqlite3_close(app) == SQLITE_OK);  // the storage finalised its statements on the app's connection
}

TEST_CASE("another thread's writes wait for an open transaction instead of joining it", "[storage][sqlite][adopt]") {
  temp_sqlite_storage s;
  outbox::testing::storage_fixture f;
  std::vector<outbox::event> inside = {f.make("alice", "in")};
  std::vector<outbox::event> outside = {f.make("alice", "out")};
  std::atomic<bool> appended{false};
  std::thread other;
  {
    auto tx = s.transaction();
    REQUIRE(s.append(std::span<outbox::event>(inside)).has_value());
    other = std::thread([&] {
      (void)s.append(std::span<outbox::event>(outside));
      appended = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // bounded wait: shows it did not finish
    CHECK_FALSE(appended);
  }  // rolled back
  other.join();
  CHECK_FALSE(s.find(inside[0].id).value().has_value());
  CHECK(s.find(outside[0].id).value().has_value());  // its own transaction, unaffected by the rollback
}

TEST_CASE("a locked database is a busy error that loses nothing", "[storage][sqlite]") {
  outbox::sqlite_options impatient = temp_sqlite_storage::fast();
  impatient.busy_timeout = std::chrono::milliseconds(50);
  temp_sqlite_storage s(temp_path("outbox-busy.db"), impatient);
  outbox::testing::storage_fixture f;
  std::vector<outbox::event> first = {f.make("alice", "a")};
  REQUIRE(s.append(std::span<outbox::event>(first)).has_value());

  sqlite3* other = nullptr;
  REQUIRE(sqlite3_open(s.file().c_str(), &other) == SQLITE_OK);
  REQUIRE(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
  std::vector<outbox::event> second = {f.make("alice", "b")};
  auto refused = s.append(std::span<outbox::event>(second));
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error() == errc::busy);
  REQUIRE(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(other);

  CHECK(s.find(first[0].id).value().has_value());
  CHECK_FALSE(s.find(second[0].id).value().has_value());
  REQUIRE(s.append(std::span<outbox::event>(second)).has_value());
}

namespace {
/// One event of 3 KB, one of seven keys: a few fill a page.
std::vector<outbox::event> one_large_event(outbox::testing::storage_fixture& f, int i) {
  std::vector<outbox::event> one = {f.make("alice", "key-" + std::to_string(i % 7))};
  one[0].payload = std::string(3000, static_cast<char>('a' + i % 26));
  return one;
}
}  // namespace

TEST_CASE("a full database is a disk_full error that loses nothing, and the storage goes on once there is room",
          "[storage][sqlite][fault]") {
  const auto file = temp_path("outbox-full.db");
  temp_file_owner cleanup(file);
  sqlite3* app = nullptr;
  REQUIRE(sqlite3_open(file.c_str(), &app) == SQLITE_OK);
  auto pragma = [&](const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    REQUIRE(sqlite3_prepare_v2(app, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
    const auto value = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return value;
  };
  outbox::testing::storage_fixture f;
  auto one_event = [&](int i) { return one_large_event(f, i); };
  std::vector<outbox::event_id> acknowledged;
  outbox::event_id refused_id;
  {
    auto s = outbox::sqlite_storage::adopt(app).value();
    for (int i = 0; i < 20; ++i) {
      auto one = one_event(i);
      REQUIRE(s.append(std::span<outbox::event>(one)).has_value());
      acknowledged.push_back(one[0].id);
    }
    // The file may not grow past the pages it has: SQLite then fails a write with SQLITE_FULL,
    // as on a full disk.
    const auto pages = pragma("PRAGMA page_count");
    REQUIRE(pragma("PRAGMA max_page_count = " + std::to_string(pages)) == pages);
    bool refused = false;
    for (int i = 20; i < 1000 && !refused; ++i) {
      auto one = one_event(i);
      auto appended = s.append(std::span<outbox::event>(one));
      if (appended) {
        acknowledged.push_back(one[0].id);  // it still fitted in free pages
        continue;
      }
      refused = true;
      refused_id = one[0].id;
      CHECK(appended.error() == errc::disk_full);
    }
    REQUIRE(refused);
    // Reads go on; what was acknowledged is there, the refused event is not.
    for (const auto& id : acknowledged) CHECK(s.find(id).value().has_value());
    CHECK_FALSE(s.find(refused_id).value().has_value());
    // A claim on the full file either fits in the pages it has or says so.
    std::vector<outbox::event> claimed;
    if (auto c = s.claim(f.claim_at("alice", f.t0, 100, std::chrono::seconds(60)), claimed); !c)
      CHECK(c.error() == errc::disk_full);

    // Room again: writes go on, no reopening needed.
    pragma("PRAGMA max_page_count = 1073741823");
    auto after = one_event(1000);
    REQUIRE(s.append(std::span<outbox::event>(after)).has_value());
    acknowledged.push_back(after[0].id);
  }
  REQUIRE(sqlite3_close(app) == SQLITE_OK);
  auto reopened = outbox::sqlite_storage::open(file.string()).value();
  for (const auto& id : acknowledged) CHECK(reopened.find(id).value().has_value());
  CHECK_FALSE(reopened.find(refused_id).value().has_value());
}

TEST_CASE("on a full file system an append is disk_full, loses nothing, and writes go on once there is room",
          "[storage][sqlite][fault][enospc]") {
  small_filesystem fs(4 << 20);
  if (!have_small_filesystem(fs)) return;
  const auto file = fs.path() / "outbox.db";
  outbox::testing::storage_fixture f;
  auto one_event = [&](int i) { return one_large_event(f, i); };
  std::vector<outbox::event_id> acknowledged;
  outbox::event_id refused_id;
  {
    auto s = outbox::sqlite_storage::open(file.string()).value();
    // The database and its WAL get one MiB more. Each commit of one event adds some 8 pages to
    // the WAL (the row, the index entries, the line), which is not reset before a checkpoint.
    fs.fill_leaving("filler", 1 << 20);
    for (int i = 0; i < 1000; ++i) {
      auto one = one_event(i);
      auto appended = s.append(std::span<outbox::event>(one));
      if (appended) {
        acknowledged.push_back(one[0].id);
        continue;
      }
      refused_id = one[0].id;
      CHECK(appended.error() == errc::disk_full);
      break;
    }
    REQUIRE_FALSE(refused_id.is_nil());
    CHECK(acknowledged.size() > 20);  // it used the room there was
    for (const auto& id : acknowledged) CHECK(s.find(id).value().has_value());
    CHECK_FALSE(s.find(refused_id).value().has_value());

    // Room again: writes go on, no reopening needed.
    std::filesystem::remove(fs.path() / "filler");
    auto after = one_event(1000);
    REQUIRE(s.append(std::span<outbox::event>(after)).has_value());
    acknowledged.push_back(after[0].id);
  }
  auto reopened = outbox::sqlite_storage::open(file.string()).value();
  for (const auto& id : acknowledged) CHECK(reopened.find(id).value().has_value());
  CHECK_FALSE(reopened.find(refused_id).value().has_value());
}

namespace {
/// Write calls (write, pwrite, writev...) this process has made so far; nullopt without
/// /proc/self/io (a kernel without task I/O accounting).
std::optional<std::uint64_t> write_calls() {
  std::ifstream io("/proc/self/io");
  std::string key;
  std::uint64_t value = 0;
  while (io >> key >> value)
    if (key == "syscw:") return value;
  return std::nullopt;
}

const char* vfs_of(sqlite3* db) {
  sqlite3_vfs* vfs = nullptr;
  REQUIRE(sqlite3_file_control(db, "main", SQLITE_FCNTL_VFS_POINTER, &vfs) == SQLITE_OK);
  REQUIRE(vfs != nullptr);
  return vfs->zName;
}
}  // namespace

TEST_CASE("with synchronous full, a commit writes its WAL frames in one call", "[storage][sqlite][wal]") {
  const auto gathered_file = temp_path("outbox-wal-gathered.db");
  const auto plain_file = temp_path("outbox-wal-plain.db");
  temp_file_owner cleanup_gathered(gathered_file), cleanup_plain(plain_file);
  outbox::sqlite_options plain_options;
  plain_options.gather_wal_writes = false;
  auto gathered = outbox::sqlite_storage::open(gathered_file.string()).value();  // synchronous full, as shipped
  auto plain = outbox::sqlite_storage::open(plain_file.string(), plain_options).value();
  CHECK(std::string(vfs_of(gathered.handle())) == "outbox-wal-gather");
  CHECK(std::string(vfs_of(plain.handle())) != "outbox-wal-gather");
  outbox::sqlite_options normal;
  normal.synchronous = outbox::sqlite_options::sync_mode::normal;  // unsynced commits: never gathered
  temp_sqlite_storage unsynced(temp_path("outbox-wal-normal.db"), normal);
  CHECK(std::string(vfs_of(unsynced.handle())) != "outbox-wal-gather");

  if (!write_calls()) return;  // nothing to count them with
  outbox::testing::storage_fixture f;
  auto calls_per_commit = [&](outbox::sqlite_storage& s) {
    std::vector<std::vector<outbox::event>> ones;
    for (int i = 0; i < 20; ++i) ones.push_back({f.make("alice", "key-" + std::to_string(i))});
    bool all_appended = true;
    const std::uint64_t before = *write_calls();  // nothing but the appends until the next read
    for (auto& one : ones) all_appended = s.append(std::span<outbox::event>(one)).has_value() && all_appended;
    const std::uint64_t after = *write_calls();
    REQUIRE(all_appended);
    return static_cast<double>(after - before) / 20;
  };
  const double gathered_calls = calls_per_commit(gathered);
  const double plain_calls = calls_per_commit(plain);
  INFO("write calls per one-event commit: gathered " << gathered_calls << ", plain " << plain_calls);
  CHECK(gathered_calls <= 1.5);  // the frames in one pwrite; now and then a checkpoint's writes
  CHECK(plain_calls >= 2 * gathered_calls);
}

TEST_CASE("gathered WAL writes: a transaction larger than the page cache, a rollback, another reader, a reopen",
          "[storage][sqlite][wal]") {
  const auto file = temp_path("outbox-wal-large.db");
  temp_file_owner cleanup(file);
  outbox::testing::storage_fixture f;
  std::vector<outbox::event_id> kept, rolled_back;
  {
    auto s = outbox::sqlite_storage::open(file.string()).value();
    REQUIRE(std::string(vfs_of(s.handle())) == "outbox-wal-gather");
    // About 8 MB in one transaction: SQLite's 2 MB page cache spills pages into the WAL before
    // the commit and reads them back from it, and the commit passes the autocheckpoint, which
    // copies the WAL's pages into the database.
    std::vector<outbox::event> large;
    for (int i = 0; i < 4000; ++i) {
      large.push_back(f.make("alice", "key-" + std::to_string(i % 50)));
      large.back().payload = std::string(2000, static_cast<char>('a' + i % 26));
    }
    int spilled = 0, unused = 0;
    REQUIRE(sqlite3_db_status(s.handle(), SQLITE_DBSTATUS_CACHE_SPILL, &unused, &unused, 1) == SQLITE_OK);
    REQUIRE(outbox::testing::append_keeping(s, large).has_value());
    REQUIRE(sqlite3_db_status(s.handle(), SQLITE_DBSTATUS_CACHE_SPILL, &spilled, &unused, 0) == SQLITE_OK);
    CHECK(spilled > 0);
    CHECK(std::filesystem::file_size(file) > (4u << 20));  // the database grows only by checkpoints
    for (const auto& e : large) kept.push_back(e.id);
    CHECK(raw_int(file, "SELECT count(*) FROM outbox_events") == 4000);  // another connection sees it all
    {
      auto tx = s.transaction();
      std::vector<outbox::event> undone;
      for (int i = 0; i < 2000; ++i) {
        undone.push_back(f.make("alice", "undone-" + std::to_string(i)));
        undone.back().payload = std::string(2000, 'u');
      }
      REQUIRE(outbox::testing::append_keeping(s, undone).has_value());
      for (const auto& e : undone) rolled_back.push_back(e.id);
    }  // rolled back: the frames it spilled are never committed
    std::vector<outbox::event> after = {f.make("bob", "after")};
    REQUIRE(s.append(std::span<outbox::event>(after)).has_value());
    kept.push_back(after[0].id);
    CHECK(raw_int(file, "SELECT count(*) FROM outbox_events") == 4001);
  }
  CHECK(raw_int(file, "SELECT count(*) FROM pragma_integrity_check WHERE integrity_check <> 'ok'") == 0);
  auto reopened = outbox::sqlite_storage::open(file.string()).value();
  for (const auto& id : kept) REQUIRE(reopened.find(id).value().has_value());
  for (const auto& id : rolled_back) REQUIRE_FALSE(reopened.find(id).value().has_value());
  const auto found = reopened.find(kept[1234]).value();
  REQUIRE(found.has_value());
  CHECK(found->payload == std::string(2000, static_cast<char>('a' + 1234 % 26)));
}

TEST_CASE("a database damaged inside a table is a corrupt_data error, not a crash", "[storage][sqlite][fault]") {
  const auto file = temp_path("outbox-damaged.db");
  temp_file_owner cleanup(file);
  outbox::testing::storage_fixture f;
  std::vector<outbox::event> batch = {f.make("alice", "a"), f.make("alice", "b")};
  {
    outbox::sqlite_storage s(file.string());
    REQUIRE(s.append(std::span<outbox::event>(batch)).has_value());
  }  // the last connection to close checkpoints the WAL into the file
  // Two events fit in one page: the events table's root is its only leaf. Give that page a
  // b-tree type that does not exist (valid: 0x02, 0x05, 0x0a, 0x0d).
  const auto root = raw_int(file, "SELECT rootpage FROM sqlite_master WHERE name = 'outbox_events'");
  const auto page_size = raw_int(file, "PRAGMA page_size");
  REQUIRE(root > 1);
  {
    std::fstream db(file, std::ios::in | std::ios::out | std::ios::binary);
    db.seekp(static_cast<std::streamoff>((root - 1) * page_size));
    db.put('\x42');
    REQUIRE(db.good());
  }
  auto opened = outbox::sqlite_storage::open(file.string());
  if (!opened) {  // opening may already read the table
    CHECK(opened.error() == errc::corrupt_data);
    return;
  }
  auto found = opened->find(batch[0].id);
  REQUIRE_FALSE(found.has_value());
  CHECK(found.error() == errc::corrupt_data);
  std::vector<outbox::event> claimed;
  auto claim = opened->claim(f.claim_at("alice", f.t0), claimed);
  REQUIRE_FALSE(claim.has_value());
  CHECK(claim.error() == errc::corrupt_data);
  CHECK(claimed.empty());
}

TEST_CASE("sqlite storage stats: stats(), stats(user) and stats(user, now)", "[storage][sqlite][stats]") {
  temp_sqlite_storage s;
  outbox_test::check_stats_shape(s);
}
