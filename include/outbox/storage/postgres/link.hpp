#pragma once
/// \file
/// What every part of the PostgreSQL storage works on: the connection (owned or adopted), its
/// statements, who may use it when, this relay's identity, and connecting again after the
/// connection broke.

#include <libpq-fe.h>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <utility>

#include "outbox/detail/connection_transactions.hpp"
#include "outbox/error.hpp"
#include "outbox/storage/postgres/connection.hpp"
#include "outbox/storage/postgres/errors.hpp"
#include "outbox/storage/postgres/options.hpp"
#include "outbox/storage/postgres/schema.hpp"
#include "outbox/storage/postgres/statements.hpp"

namespace outbox::detail::postgres {

/// A relay's identity: random, positive, unique among the relays of a database with
/// overwhelming probability. Its claims carry it; its connection holds it as an advisory lock.
[[nodiscard]] inline std::int64_t random_relay_id() {
  std::random_device rd;
  const std::uint64_t v = (static_cast<std::uint64_t>(rd()) << 32 | rd()) & 0x3FFF'FFFF'FFFF'FFFFULL;
  return static_cast<std::int64_t>(v | 1);
}

/// The shard of each user's completed count a relay adds to (schema version 4): its id modulo 64,
/// one of 32 odd shards, as relay ids are odd, so relays recording at once seldom share a row;
/// shard 0 is the purges'.
[[nodiscard]] constexpr int completed_shard(std::int64_t relay) noexcept { return static_cast<int>(relay % 64); }

struct link : connection_gate {
  connection_handle handle;
  std::string conninfo;  // empty for an adopted connection
  postgres_options options;
  statements sql;
  std::int64_t relay_id = random_relay_id();
  bool broken = false;  // the connection failed: connect again before the next statement

  link(connection_handle h, std::string info, postgres_options o)
      : handle(std::move(h)), conninfo(std::move(info)), options(std::move(o)), sql(options.schema) {}
  link(const link&) = delete;
  link& operator=(const link&) = delete;

  [[nodiscard]] PGconn* conn() const noexcept { return handle.get(); }

  // The application transaction of a transaction_guard (connection_gate: its thread's writes
  // join it, every other thread waits until it ends).
  result<void> begin_application() { return statement("BEGIN"); }
  result<void> commit_application() { return statement("COMMIT"); }
  void rollback_application() noexcept {
    if (!broken) (void)statement("ROLLBACK");
  }

  /// The schema, then this relay's advisory lock: on a fresh connection.
  result<void> initialise() {
    if (auto m = migrate(conn(), options.schema); !m) return m;
    return hold_relay_lock();
  }

  result<void> hold_relay_lock() {
    auto r = postgres::run_one(conn(), {sql.relay_lock, {text_of(relay_id)}}, "taking the relay lock");
    if (!r) return r.error();
    return {};
  }

  /// Connects again if the connection broke (the caller holds it). An owned connection is
  /// opened anew from its conninfo; an adopted one is reset (PQreset) in place.
  result<void> ensure() {
    if (!broken && PQstatus(conn()) == CONNECTION_OK) return {};
    if (handle.owned()) {
      auto fresh = connect(conninfo);
      if (!fresh) return fresh.error();
      handle = std::move(*fresh);
    } else {
      PQreset(conn());
      if (PQstatus(conn()) != CONNECTION_OK) return failure(conn(), nullptr, "reconnecting");
    }
    broken = false;
    if (auto held = hold_relay_lock(); !held) {
      broken = true;
      return held;
    }
    return {};
  }

  /// Notes a failed call: a lost connection, or a server that ended it, is connected again by
  /// the next call.
  void note(const error& e) noexcept {
    if (connection_gone(e) || PQstatus(conn()) != CONNECTION_OK) broken = true;
  }

  /// Runs `queries` in one round trip on a live connection (the caller holds it). A connection
  /// found broken outside any transaction (the server restarted, or ended this backend while
  /// it was idle) is connected again and the queries sent once more. Usually the server never
  /// saw them; if it ran them and only the answer was lost, running them again is harmless: what
  /// the storage sends outside a transaction is a read, an idempotent maintenance write, a claim
  /// (the lost claim's events return when its lease ends) or a record (fenced: applied once).
  /// Inside a transaction the failure is the caller's: the transaction is gone.
  result<std::vector<result_handle>> run(std::span<const query> queries, std::string_view what) {
    return with_retry([&] { return postgres::run(conn(), queries, what); });
  }
  result<result_handle> run_one(const query& q, std::string_view what) {
    return with_retry([&] { return postgres::run_one(conn(), q, what); });
  }
  /// A statement without parameters or rows (BEGIN, COMMIT, SAVEPOINT ...).
  result<void> statement(std::string_view text) {
    auto r = run_one({text, {}}, text);
    if (!r) return r.error();
    return {};
  }

 private:
  template <class F>
  auto with_retry(F&& send) -> decltype(send()) {
    if (auto up = ensure(); !up) return up.error();
    const bool idle = PQtransactionStatus(conn()) == PQTRANS_IDLE;
    auto r = send();
    if (r) return r;
    note(r.error());
    if (!broken || !idle) return r;
    if (auto up = ensure(); !up) return r;  // still down: the first failure says why
    r = send();
    if (!r) note(r.error());
    return r;
  }
};

}  // namespace outbox::detail::postgres
