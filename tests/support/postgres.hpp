#pragma once
// The PostgreSQL server of a test run (started by the CTest fixture `postgres`, see
// scripts/pg_server) and storages on it, each in a fresh schema of its own that is dropped when
// the storage goes away. The conninfo comes from OUTBOX_PG_CONNINFO, or from the file named by
// OUTBOX_PG_CONNINFO_FILE; without either the PostgreSQL tests are skipped, said once.

#include <outbox/storage/postgres.hpp>

#include <catch2/catch.hpp>

#include <libpq-fe.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <unistd.h>
#include <utility>

namespace outbox_test {

/// The conninfo of the test run's server, if there is one.
inline const std::optional<std::string>& pg_conninfo() {
  static const std::optional<std::string> info = []() -> std::optional<std::string> {
    if (const char* direct = std::getenv("OUTBOX_PG_CONNINFO"); direct && *direct) return std::string(direct);
    if (const char* file = std::getenv("OUTBOX_PG_CONNINFO_FILE"); file && *file) {
      std::ifstream in(file);
      std::string line;
      if (std::getline(in, line) && !line.empty()) return line;
    }
    std::printf("outbox_postgres_tests: no PostgreSQL server (OUTBOX_PG_CONNINFO unset; see scripts/pg_server), "
                "PostgreSQL tests skipped\n");
    return std::nullopt;
  }();
  return info;
}

#define OUTBOX_REQUIRE_POSTGRES()                \
  do {                                           \
    if (!::outbox_test::pg_conninfo()) {         \
      SUCCEED("no PostgreSQL server");           \
      return;                                    \
    }                                            \
  } while (false)

/// A connection of the test's own, for SQL the storage must not be asked to run.
class raw_pg {
 public:
  raw_pg() : conn_(PQconnectdb(pg_conninfo().value().c_str())) {
    REQUIRE(PQstatus(conn_) == CONNECTION_OK);
  }
  raw_pg(const raw_pg&) = delete;
  raw_pg& operator=(const raw_pg&) = delete;
  ~raw_pg() { PQfinish(conn_); }
  [[nodiscard]] PGconn* get() const noexcept { return conn_; }

  /// Runs `sql` (no parameters); returns the first column of the first row, if any.
  std::string exec(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    const auto st = PQresultStatus(r);
    INFO(sql << ": " << PQresultErrorMessage(r));
    const bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    std::string value = ok && PQntuples(r) > 0 && PQnfields(r) > 0 ? PQgetvalue(r, 0, 0) : "";
    PQclear(r);
    REQUIRE(ok);
    return value;
  }
  std::int64_t number(const std::string& sql) { return std::strtoll(exec(sql).c_str(), nullptr, 10); }

 private:
  PGconn* conn_;
};

/// A schema name no other storage of the run uses.
inline std::string fresh_schema() {
  static std::atomic<int> counter{0};
  static const unsigned salt = std::random_device{}() % 100000;
  return "outbox_t" + std::to_string(::getpid()) + "_" + std::to_string(salt) + "_" + std::to_string(counter++);
}

/// Drops its schema when destroyed.
struct schema_owner {
  std::string schema;
  explicit schema_owner(std::string s) : schema(std::move(s)) {}
  schema_owner(schema_owner&& other) noexcept : schema(std::exchange(other.schema, {})) {}
  schema_owner& operator=(schema_owner&&) = delete;
  ~schema_owner() {
    if (schema.empty() || !pg_conninfo()) return;
    PGconn* c = PQconnectdb(pg_conninfo()->c_str());
    PQclear(PQexec(c, ("SET client_min_messages = warning; DROP SCHEMA IF EXISTS " + schema + " CASCADE").c_str()));
    PQfinish(c);
  }
};

inline outbox::postgres_options pg_options(std::string schema) {
  outbox::postgres_options o;
  o.schema = std::move(schema);
  return o;
}

/// A storage in a fresh schema, dropped when it goes away. Default-constructible, so tests
/// written for other storages run on it unchanged.
class temp_pg_storage : private schema_owner, public outbox::postgres_storage {
 public:
  temp_pg_storage() : temp_pg_storage(fresh_schema()) {}
  explicit temp_pg_storage(std::string schema)
      : schema_owner(schema), outbox::postgres_storage(pg_conninfo().value(), pg_options(schema)) {}
  temp_pg_storage(temp_pg_storage&&) noexcept = default;
};

}  // namespace outbox_test
