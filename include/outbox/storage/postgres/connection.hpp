#pragma once
/// \file
/// The libpq connection in small RAII types: `result_handle` owns a `PGresult`,
/// `connection_handle` a `PGconn` (or borrows the application's), and `connection::run` sends
/// a list of statements in one round trip (libpq's pipeline mode) and reads every result. A
/// connection that broke is connected again by the next call.

#include <libpq-fe.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "outbox/error.hpp"
#include "outbox/storage/postgres/codec.hpp"
#include "outbox/storage/postgres/errors.hpp"

namespace outbox::detail::postgres {

/// Owns one `PGresult`; reads its cells as text.
class result_handle {
 public:
  result_handle() = default;
  explicit result_handle(PGresult* r) noexcept : r_(r) {}
  [[nodiscard]] PGresult* get() const noexcept { return r_.get(); }
  [[nodiscard]] int rows() const noexcept { return r_ ? PQntuples(r_.get()) : 0; }
  [[nodiscard]] bool is_null(int row, int col) const noexcept { return PQgetisnull(r_.get(), row, col) != 0; }
  [[nodiscard]] const char* text(int row, int col) const noexcept { return PQgetvalue(r_.get(), row, col); }
  [[nodiscard]] std::string str(int row, int col) const {
    return std::string(PQgetvalue(r_.get(), row, col), static_cast<std::size_t>(PQgetlength(r_.get(), row, col)));
  }
  [[nodiscard]] std::int64_t integer(int row, int col) const noexcept { return int_of(text(row, col)); }
  [[nodiscard]] timestamp time(int row, int col) const noexcept { return time_of(text(row, col)); }
  [[nodiscard]] event_id id(int row, int col) const noexcept { return id_of(text(row, col)); }
  [[nodiscard]] std::string bytes(int row, int col) const { return bytes_of(text(row, col)); }

 private:
  struct clear {
    void operator()(PGresult* r) const noexcept { PQclear(r); }
  };
  std::unique_ptr<PGresult, clear> r_;
};

/// The connection: owned (closed at the end) or the application's (left open).
class connection_handle {
 public:
  connection_handle() = default;
  connection_handle(PGconn* c, bool owned) noexcept : conn_(c), owned_(owned) {}
  connection_handle(connection_handle&& o) noexcept
      : conn_(std::exchange(o.conn_, nullptr)), owned_(std::exchange(o.owned_, false)) {}
  connection_handle& operator=(connection_handle&& o) noexcept {
    if (this != &o) {
      close();
      conn_ = std::exchange(o.conn_, nullptr);
      owned_ = std::exchange(o.owned_, false);
    }
    return *this;
  }
  connection_handle(const connection_handle&) = delete;
  connection_handle& operator=(const connection_handle&) = delete;
  ~connection_handle() { close(); }

  [[nodiscard]] PGconn* get() const noexcept { return conn_; }
  [[nodiscard]] bool owned() const noexcept { return owned_; }

 private:
  void close() noexcept {
    if (conn_ && owned_) PQfinish(conn_);
    conn_ = nullptr;
  }
  PGconn* conn_ = nullptr;
  bool owned_ = false;
};

/// Opens a connection from a libpq conninfo string ("host=/run/pg dbname=app" or a URI).
[[nodiscard]] inline result<connection_handle> connect(const std::string& conninfo) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  connection_handle handle(c, true);
  if (!c) return error(make_error_code(postgres_errc::connection_lost), "connecting: out of memory");
  if (PQstatus(c) != CONNECTION_OK) return failure(c, nullptr, "connecting");
  return handle;
}

/// One statement and its parameters.
struct query {
  std::string_view sql;
  std::vector<param> params{};
};

/// Sends `queries` in one round trip and returns one result per query, or the first error. In
/// pipeline mode the server skips what follows a failed statement up to the end of the list;
/// the caller's transaction (if it opened one) is then aborted, and the caller rolls it back.
[[nodiscard]] inline result<std::vector<result_handle>> run(PGconn* c, std::span<const query> queries,
                                                            std::string_view what) {
  std::vector<result_handle> out;
  out.reserve(queries.size());
  auto send = [&](const query& q) {
    std::vector<const char*> values;
    values.reserve(q.params.size());
    for (const auto& p : q.params) values.push_back(p ? p->c_str() : nullptr);
    const std::string sql(q.sql);
    return PQsendQueryParams(c, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                             nullptr, 0) == 1;
  };
  auto ok = [](const PGresult* r) {
    const auto st = PQresultStatus(r);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
  };
  if (queries.size() == 1) {
    if (!send(queries[0])) return failure(c, nullptr, what);
    std::optional<error> first;
    while (PGresult* r = PQgetResult(c)) {
      result_handle h(r);
      if (!ok(r) && !first) first = failure(c, r, what);
      if (out.empty()) out.push_back(std::move(h));
    }
    if (first) return *first;
    if (out.empty()) return failure(c, nullptr, what);
    return out;
  }
  if (PQenterPipelineMode(c) != 1) return failure(c, nullptr, what);
  struct leave_pipeline {
    PGconn* c;
    ~leave_pipeline() {
      if (PQpipelineStatus(c) != PQ_PIPELINE_OFF) PQexitPipelineMode(c);
    }
  } leave{c};
  for (const auto& q : queries)
    if (!send(q)) return failure(c, nullptr, what);
  if (PQpipelineSync(c) != 1) return failure(c, nullptr, what);
  std::optional<error> first;
  for (std::size_t i = 0; i < queries.size(); ++i) {
    PGresult* r = PQgetResult(c);
    if (!r) return failure(c, nullptr, what);  // the connection broke
    result_handle h(r);
    if (PQresultStatus(r) == PGRES_PIPELINE_ABORTED) {
      if (!first) first = failure(c, r, what);
    } else if (!ok(r) && !first) {
      first = failure(c, r, what);
    }
    out.push_back(std::move(h));
    while (PGresult* extra = PQgetResult(c)) PQclear(extra);  // the nullptr that ends each query
  }
  // The sync's own result ends the pipeline.
  for (;;) {
    PGresult* r = PQgetResult(c);
    if (!r) {
      if (PQstatus(c) == CONNECTION_BAD) return failure(c, nullptr, what);
      continue;
    }
    const bool sync = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
    PQclear(r);
    if (sync) break;
  }
  if (first) return *first;
  return out;
}

/// One statement.
[[nodiscard]] inline result<result_handle> run_one(PGconn* c, const query& q, std::string_view what) {
  auto r = run(c, std::span<const query>(&q, 1), what);
  if (!r) return r.error();
  return std::move((*r)[0]);
}

}  // namespace outbox::detail::postgres
