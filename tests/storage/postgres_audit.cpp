// outbox::postgres_storage's schema steps and the plans the server picks (EXPLAIN) for the audit
// reads and the drain's statements, on a table large enough that a scan of every event would be
// the planner's choice if no index served the query.
#include <outbox/storage/postgres.hpp>
#include <outbox/testing/storage_conformance.hpp>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "support/fixture.hpp"
#include "support/postgres.hpp"

using namespace outbox_test;
using outbox::status;

namespace {
using outbox::detail::postgres::statements;

/// The server's plan of `sql` with `params` bound, one line per node.
std::string plan_of(raw_pg& raw, const std::string& sql, const std::vector<const char*>& params) {
  const std::string explain = "EXPLAIN (COSTS OFF) " + sql;
  PGresult* r = PQexecParams(raw.get(), explain.c_str(), static_cast<int>(params.size()), nullptr, params.data(),
                             nullptr, nullptr, 0);
  INFO(PQresultErrorMessage(r));
  const bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
  std::string plan;
  for (int row = 0; ok && row < PQntuples(r); ++row) plan += std::string(PQgetvalue(r, row, 0)) + "\n";
  PQclear(r);
  REQUIRE(ok);
  return plan;
}

/// `n` pending events straight into the table (and their key rows): `entity-<i % 2000>`,
/// `type-<i % 1000>`, users `u0`..`u3`, 500 ordering keys.
void fill(raw_pg& raw, const std::string& schema, int n) {
  raw.exec("INSERT INTO " + schema +
           ".events (id, type, entity_id, entity_type, ordering_key, user_id, payload, priority, status, attempts, "
           "max_attempts, created_at, updated_at, retry_after, completed_at, last_error, remote_id, lease, "
           "lease_until, relay) SELECT gen_random_uuid(), 'type-' || (i % 1000), 'entity-' || (i % 2000), 'order', "
           "'k' || (i % 500), 'u' || (i % 4), '\\x00'::bytea, 0, 0, 0, 5, i, i, 0, 0, '', '', 0, 0, 0 "
           "FROM generate_series(1, " + std::to_string(n) + ") AS i");
  raw.exec("INSERT INTO " + schema + ".keys SELECT DISTINCT user_id, ordering_key, 0 FROM " + schema + ".events");
}

/// Turns a schema the storage created (the current version) back into version `v`'s shape, and
/// says so in its meta row.
void make_version(raw_pg& raw, const std::string& schema, int v) {
  const std::string s = schema + ".";
  if (v < 4) raw.exec("DROP TABLE " + s + "completed");  // completed events were counted by reading them
  if (v < 3)  // the line also held processing events, the status index every status
    raw.exec("DROP INDEX " + s + "events_line; CREATE INDEX events_line ON " + s +
             "events (user_id, ordering_key, seq) WHERE status IN (0, 1, 3); DROP INDEX " + s +
             "events_status; CREATE INDEX events_status ON " + s + "events (status, user_id, seq)");
  if (v < 2) raw.exec("DROP INDEX " + s + "events_entity; DROP INDEX " + s + "events_type");  // the audit indexes
  raw.exec("UPDATE " + s + "meta SET value = '" + std::to_string(v) + "' WHERE key = 'schema_version'");
}

std::string index_definition(raw_pg& raw, const std::string& schema, const std::string& index) {
  return raw.exec("SELECT indexdef FROM pg_indexes WHERE schemaname = '" + schema + "' AND indexname = '" + index + "'");
}

/// What a schema test starts from (after OUTBOX_REQUIRE_POSTGRES): the fixture, a fresh schema of
/// its own, a raw connection of the test's own.
struct schema_test {
  outbox::testing::storage_fixture f;
  schema_owner owner{fresh_schema()};
  raw_pg raw;
};

/// What a plan test starts from: a schema the storage made, with `n` events put straight in
/// (fill), and a raw connection of the test's own.
struct filled_schema {
  schema_owner owner{fresh_schema()};
  raw_pg raw;
  explicit filled_schema(int n) {
    (void)outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema)).value();
    fill(raw, owner.schema, n);
  }
};

bool uses_index(const std::string& plan, const std::string& index) {
  return (plan.find("Index Scan using " + index) != std::string::npos ||
          plan.find("Index Only Scan using " + index) != std::string::npos ||
          plan.find("Bitmap Index Scan on " + index) != std::string::npos);
}
}  // namespace

TEST_CASE("postgres: an older schema takes the migration steps and keeps its events",
          "[storage][postgres][schema]") {
  OUTBOX_REQUIRE_POSTGRES();
  schema_test t;
  auto& [f, owner, raw] = t;
  std::vector<outbox::event> batch = {f.make("alice", "k1"), f.make("alice", "k2")};
  batch[0].entity_id = "order-1";
  batch[1].entity_id = "order-2";
  {
    auto s = outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema)).value();
    REQUIRE(s.append(batch).has_value());
  }
  make_version(raw, owner.schema, 1);
  auto index_count = [&] {
    return raw.number("SELECT count(*) FROM pg_indexes WHERE schemaname = '" + owner.schema +
                      "' AND indexname IN ('events_entity', 'events_type')");
  };
  REQUIRE(index_count() == 0);

  auto s = outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema)).value();
  CHECK(raw.exec("SELECT value FROM " + owner.schema + ".meta WHERE key = 'schema_version'") ==
        std::to_string(outbox::detail::postgres::schema_version));
  CHECK(index_count() == 2);
  outbox::event_query q;
  q.entity_id = "order-2";
  auto found = s.query(q);
  REQUIRE(found.has_value());
  REQUIRE(found->size() == 1);
  CHECK(found->front().id == batch[1].id);
  CHECK(s.stats().value().count(status::pending) == 2);
}

TEST_CASE("postgres: a version 2 schema takes the narrower indexes and keeps its events in flight",
          "[storage][postgres][schema]") {
  OUTBOX_REQUIRE_POSTGRES();
  using namespace std::chrono_literals;
  schema_test t;
  auto& [f, owner, raw] = t;
  std::vector<outbox::event> batch = {f.make("alice", "k1"), f.make("alice", "k1"), f.make("alice", "k2")};
  std::vector<outbox::event> claimed;
  {
    auto s = outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema)).value();
    REQUIRE(s.append(batch).has_value());
    REQUIRE(s.claim(f.claim_at("alice", f.t0), claimed).value() == 2);  // the heads of k1 and k2
  }
  make_version(raw, owner.schema, 2);
  REQUIRE(index_definition(raw, owner.schema, "events_line").find("ARRAY[0, 1, 3]") != std::string::npos);

  auto s = outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema)).value();
  CHECK(raw.exec("SELECT value FROM " + owner.schema + ".meta WHERE key = 'schema_version'") ==
        std::to_string(outbox::detail::postgres::schema_version));
  CHECK(index_definition(raw, owner.schema, "events_line").find("WHERE (status = ANY (ARRAY[0, 3]))") !=
        std::string::npos);
  CHECK(index_definition(raw, owner.schema, "events_status").find("WHERE (status = ANY (ARRAY[0, 3, 4]))") !=
        std::string::npos);
  // k1's second event still waits behind its first, in flight across the migration.
  std::vector<outbox::event> next;
  CHECK(s.claim(f.claim_at("alice", f.t0 + 1s), next).value() == 0);
  const auto first = std::find_if(claimed.begin(), claimed.end(), [&](const auto& e) { return e.id == batch[0].id; });
  REQUIRE(first != claimed.end());
  std::vector<outbox::outcome> done = {f.complete(*first, f.t0 + 2s)};
  REQUIRE(s.record(done).value() == 1);
  REQUIRE(s.claim(f.claim_at("alice", f.t0 + 3s), next).value() == 1);
  CHECK(next.front().id == batch[1].id);
  const auto stats = s.stats(std::nullopt, f.t0 + 3s).value();
  CHECK(stats.count(status::completed) == 1);
  CHECK(stats.count(status::processing) == 2);
}

TEST_CASE("postgres: completed events are counted where they change, by every relay, and not read by stats()",
          "[storage][postgres][schema][stats]") {
  OUTBOX_REQUIRE_POSTGRES();
  using namespace std::chrono_literals;
  schema_test t;
  auto& [f, owner, raw] = t;
  std::vector<outbox::event> batch = {f.make("alice", "a1"), f.make("alice", "a2"), f.make("bob", "b1")};
  auto deliver = [&](outbox::postgres_storage& s, std::string_view user, outbox::timestamp at) {
    std::vector<outbox::event> claimed;
    REQUIRE(s.claim(f.claim_at(user, at), claimed).has_value());
    std::vector<outbox::outcome> done;
    for (const auto& e : claimed) done.push_back(f.complete(e, at));
    REQUIRE(s.record(done).value() == claimed.size());
    return claimed.size();
  };
  {
    auto s = outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema)).value();
    REQUIRE(s.append(batch).has_value());
    REQUIRE(deliver(s, "alice", f.t0 + 1s) == 2);
    REQUIRE(deliver(s, "bob", f.t0 + 5s) == 1);
  }
  // Version 3 had no counts: its step counts the history once.
  make_version(raw, owner.schema, 3);
  auto s = outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema)).value();
  CHECK(raw.exec("SELECT value FROM " + owner.schema + ".meta WHERE key = 'schema_version'") ==
        std::to_string(outbox::detail::postgres::schema_version));
  auto completed = [&](std::optional<std::string_view> user) {
    return s.stats(user, f.t0 + 20s).value().count(status::completed);
  };
  CHECK(completed("alice") == 2);
  CHECK(completed("bob") == 1);
  CHECK(completed(std::nullopt) == 3);

  // Another relay's deliveries count too, and a stale outcome counts nothing.
  auto other = outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema)).value();
  std::vector<outbox::event> more = {f.make("alice", "a3")};
  REQUIRE(s.append(more).has_value());
  std::vector<outbox::event> claimed;
  REQUIRE(other.claim(f.claim_at("alice", f.t0 + 10s), claimed).value() == 1);
  std::vector<outbox::outcome> done = {f.complete(claimed[0], f.t0 + 10s)};
  REQUIRE(other.record(done).value() == 1);
  REQUIRE(other.record(done).value() == 0);
  CHECK(completed("alice") == 3);
  CHECK(s.stats(std::string_view("alice"), f.t0 + 20s).value().count(status::processing) == 0);

  // A purge takes what it deletes from the count: alice's two delivered at t0 + 1s.
  CHECK(s.purge_completed(f.t0 + 3s).value() == 2);
  CHECK(completed("alice") == 1);
  CHECK(completed("bob") == 1);
  CHECK(raw.number("SELECT count(*) FROM " + owner.schema + ".events WHERE status = 2") == 2);

  // stats() reads the kept count: it does not count the delivered events again.
  raw.exec("UPDATE " + owner.schema + ".completed SET n = n + 40 WHERE user_id = 'bob' AND shard = 0");
  CHECK(completed("bob") == 41);
  CHECK(completed(std::nullopt) == 42);
}

TEST_CASE("postgres: the counts and oldest ages of stats() read no delivered event, with or without statistics",
          "[storage][postgres][plans][stats]") {
  OUTBOX_REQUIRE_POSTGRES();
  filled_schema t(20000);
  auto& [owner, raw] = t;
  raw.exec("UPDATE " + owner.schema + ".events SET status = 2 WHERE seq % 100 <> 0");  // the history
  const statements sql(owner.schema);
  auto check_plan = [&](const char* user) {
    const std::string plan = plan_of(raw, sql.count_by_status, {user});
    INFO(plan);
    CHECK(plan.find("Seq Scan on events") == std::string::npos);
    CHECK(uses_index(plan, "events_status"));
    // The oldest pending (failed, dead) event: read through an index of waiting events only
    // (events_status, or events_line for one user), not by walking the primary key.
    const std::string oldest = plan_of(raw, sql.oldest_with_status, {user, "0"});
    INFO(oldest);
    CHECK((uses_index(oldest, "events_status") || uses_index(oldest, "events_line")));
    CHECK(oldest.find("events_pkey") == std::string::npos);
    CHECK(oldest.find("Seq Scan on events") == std::string::npos);
  };
  SECTION("never analyzed") {
    check_plan(nullptr);
    check_plan("u1");
  }
  SECTION("analyzed") {
    raw.exec("ANALYZE " + owner.schema + ".events");
    check_plan(nullptr);
    check_plan("u1");
  }
}

TEST_CASE("postgres: queries by entity and by type walk their indexes", "[storage][postgres][plans]") {
  OUTBOX_REQUIRE_POSTGRES();
  filled_schema t(20000);
  auto& [owner, raw] = t;
  raw.exec("ANALYZE " + owner.schema + ".events");
  const statements sql(owner.schema);
  // $1 after_seq, $2 status, $3 user, $4 limit, $5 entity or type, $6 type beside an entity.
  SECTION("by entity, alone and with every other filter") {
    INFO(plan_of(raw, sql.query_events_of_entity, {"0", nullptr, nullptr, "100", "entity-7", nullptr}));
    CHECK(uses_index(plan_of(raw, sql.query_events_of_entity, {"0", nullptr, nullptr, "100", "entity-7", nullptr}),
                     "events_entity"));
    CHECK(uses_index(plan_of(raw, sql.query_events_of_entity, {"5", "0", "u3", "10", "entity-7", "type-7"}),
                     "events_entity"));
  }
  SECTION("by type, alone and with every other filter") {
    INFO(plan_of(raw, sql.query_events_of_type, {"0", nullptr, nullptr, "100", "type-7"}));
    CHECK(uses_index(plan_of(raw, sql.query_events_of_type, {"0", nullptr, nullptr, "100", "type-7"}), "events_type"));
    CHECK(uses_index(plan_of(raw, sql.query_events_of_type, {"5", "0", "u3", "10", "type-7"}), "events_type"));
  }
}

TEST_CASE("postgres: a claim walks the ready index and probes each candidate's key, with or without statistics",
          "[storage][postgres][plans]") {
  OUTBOX_REQUIRE_POSTGRES();
  filled_schema t(10000);  // filled in one burst: no statistics yet
  auto& [owner, raw] = t;
  const statements sql(owner.schema);
  // $1 user, $2 now, $3 lease end, $4 limit, $5 relay.
  auto check_plan = [&] {
    const std::string plan = plan_of(raw, sql.claim, {"u1", "100000000", "100000001", "100", "1"});
    INFO(plan);
    // Candidates come from events_ready in claim order (no sort of the user's events); a key's
    // head is looked up per candidate at its (user, key), never by a scan of the user's whole
    // line per candidate (the anti-join the planner chose without statistics).
    CHECK(plan.find("Index Scan using events_ready on events e") != std::string::npos);
    CHECK(plan.find("Sort") == std::string::npos);
    CHECK(plan.find("Index Cond: ((user_id = e.user_id) AND (ordering_key = e.ordering_key))") != std::string::npos);
    CHECK(plan.find("Anti Join") == std::string::npos);
    // The head check reads the key's line only before the candidate: its cost does not grow with
    // the key's backlog.
    CHECK(uses_index(plan, "events_line"));
    CHECK(plan.find("Index Cond: ((user_id = e.user_id) AND (ordering_key = e.ordering_key) AND (seq < e.seq))") !=
          std::string::npos);
  };
  SECTION("never analyzed") { check_plan(); }
  SECTION("analyzed") {
    raw.exec("ANALYZE " + owner.schema + ".events; ANALYZE " + owner.schema + ".keys");
    check_plan();
  }
}

TEST_CASE("postgres: a record finds its keys by event id, not through the lease index",
          "[storage][postgres][plans]") {
  OUTBOX_REQUIRE_POSTGRES();
  filled_schema t(10000);
  auto& [owner, raw] = t;
  raw.exec("UPDATE " + owner.schema + ".events SET status = 1, lease_until = 1 WHERE seq % 10 = 0");
  const std::string ids =
      raw.exec("SELECT array_agg(id)::text FROM (SELECT id FROM " + owner.schema + ".events WHERE status = 1 LIMIT 100) x");
  const statements sql(owner.schema);
  // The lease index holds an entry for every processing version, dead ones included until a
  // vacuum: read through it, or through the whole table, each record's cost grew with the drain.
  auto check_plan = [&] {
    const std::string plan = plan_of(raw, sql.lock_recorded_keys, {ids.c_str()});
    INFO(plan);
    CHECK(uses_index(plan, "events_id_key"));
    CHECK_FALSE(uses_index(plan, "events_leases"));
    CHECK(plan.find("Seq Scan on events") == std::string::npos);
  };
  SECTION("never analyzed") { check_plan(); }
  SECTION("analyzed") {
    raw.exec("ANALYZE " + owner.schema + ".events; ANALYZE " + owner.schema + ".keys");
    check_plan();
  }
}
