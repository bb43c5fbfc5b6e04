// outbox::postgres_storage's audit reads on a real server: the schema step that adds their
// indexes, and the plans the server picks for them (EXPLAIN), on a table large enough that a scan
// of every event would be the planner's choice if no index served the query.
#include <outbox/storage/postgres.hpp>
#include <outbox/testing/storage_conformance.hpp>

#include <string>
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

bool uses_index(const std::string& plan, const std::string& index) {
  return (plan.find("Index Scan using " + index) != std::string::npos ||
          plan.find("Index Only Scan using " + index) != std::string::npos ||
          plan.find("Bitmap Index Scan on " + index) != std::string::npos);
}
}  // namespace

TEST_CASE("postgres: an older schema takes the migration steps and keeps its events",
          "[storage][postgres][schema]") {
  OUTBOX_REQUIRE_POSTGRES();
  outbox::testing::storage_fixture f;
  schema_owner owner(fresh_schema());
  raw_pg raw;
  std::vector<outbox::event> batch = {f.make("alice", "k1"), f.make("alice", "k2")};
  batch[0].entity_id = "order-1";
  batch[1].entity_id = "order-2";
  {
    auto s = outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema)).value();
    REQUIRE(s.append(batch).has_value());
  }
  // Version 1 is version 2 without the audit indexes.
  raw.exec("DROP INDEX " + owner.schema + ".events_entity; DROP INDEX " + owner.schema + ".events_type; UPDATE " +
           owner.schema + ".meta SET value = '1' WHERE key = 'schema_version'");
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

TEST_CASE("postgres: queries by entity and by type walk their indexes", "[storage][postgres][plans]") {
  OUTBOX_REQUIRE_POSTGRES();
  schema_owner owner(fresh_schema());
  (void)outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema)).value();
  raw_pg raw;
  fill(raw, owner.schema, 20000);
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
  schema_owner owner(fresh_schema());
  (void)outbox::postgres_storage::open(*pg_conninfo(), pg_options(owner.schema)).value();
  raw_pg raw;
  fill(raw, owner.schema, 10000);  // filled in one burst: no statistics yet
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
  };
  SECTION("never analyzed") { check_plan(); }
  SECTION("analyzed") {
    raw.exec("ANALYZE " + owner.schema + ".events; ANALYZE " + owner.schema + ".keys");
    check_plan();
  }
}
