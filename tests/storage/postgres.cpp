// outbox::postgres_storage on a real server (the test run's, see tests/support/postgres.hpp):
// the conformance suite, then what a server adds: the schema and its versions, adopted
// connections and their transactions, typed errors, reconnection.
#include <outbox/storage/postgres.hpp>
#include <outbox/testing/storage_conformance.hpp>

#include <string>

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
