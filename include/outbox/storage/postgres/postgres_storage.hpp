#pragma once
/// \file
/// `outbox::postgres_storage`, the public class, its `transaction_guard` and its wake-up
/// subscription. Include <outbox/storage/postgres.hpp>, which documents the storage.

#include <libpq-fe.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "outbox/clock.hpp"
#include "outbox/entity.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage.hpp"
#include "outbox/storage/postgres/append.hpp"
#include "outbox/storage/postgres/claim.hpp"
#include "outbox/storage/postgres/entities.hpp"
#include "outbox/storage/postgres/group_commit.hpp"
#include "outbox/storage/postgres/link.hpp"
#include "outbox/storage/postgres/listener.hpp"
#include "outbox/storage/postgres/maintenance.hpp"
#include "outbox/storage/postgres/options.hpp"
#include "outbox/storage/postgres/queries.hpp"
#include "outbox/storage/postgres/record.hpp"

namespace outbox {

/// A durable `outbox::storage` and `outbox::entity_storage` on PostgreSQL, shareable by many
/// relays. Movable; thread-safe.
class postgres_storage {
 public:
  /// Connects with a libpq conninfo string ("host=/run/postgresql dbname=app" or a URI) and
  /// brings the schema up to date. Typed errors instead of throwing: invalid_argument (the
  /// schema name), postgres_errc::connection_lost (cannot connect), schema_too_new.
  [[nodiscard]] static result<postgres_storage> open(const std::string& conninfo, postgres_options options = {}) {
    if (auto checked = detail::postgres::check_schema_name(options.schema); !checked) return checked.error();
    auto conn = detail::postgres::connect(conninfo);
    if (!conn) return conn.error();
    auto s = std::make_unique<state>(std::move(*conn), conninfo, std::move(options));
    if (auto ready = s->link.initialise(); !ready) return ready.error();
    return postgres_storage(std::move(s));
  }

  /// Works on the application's connection, which must outlive the storage. A write made while
  /// that connection is inside a transaction (the application's BEGIN, or `transaction()`)
  /// joins it: the application's rows and the outbox events commit or roll back together. The
  /// application must not use the connection from another thread while the storage does.
  [[nodiscard]] static result<postgres_storage> adopt(PGconn* conn, postgres_options options = {}) {
    if (!conn) return error(errc::invalid_argument, "outbox::postgres_storage::adopt: null connection");
    if (auto checked = detail::postgres::check_schema_name(options.schema); !checked) return checked.error();
    if (PQstatus(conn) != CONNECTION_OK)
      return detail::postgres::failure(conn, nullptr, "outbox::postgres_storage::adopt");
    auto s = std::make_unique<state>(detail::postgres::connection_handle(conn, false), std::string(),
                                     std::move(options));
    if (auto ready = s->link.initialise(); !ready) return ready.error();
    return postgres_storage(std::move(s));
  }

  /// Throws `outbox::exception` with the same typed error `open` returns.
  explicit postgres_storage(const std::string& conninfo, postgres_options options = {})
      : postgres_storage(open(conninfo, std::move(options)).value()) {}

  postgres_storage(postgres_storage&&) noexcept = default;
  postgres_storage& operator=(postgres_storage&&) noexcept = default;
  ~postgres_storage() = default;

  /// The connection, for the application's own statements (inside `transaction()`).
  [[nodiscard]] PGconn* handle() const noexcept { return s_->link.conn(); }
  /// This relay's identity: its claims carry it, and its connection holds it as an advisory
  /// lock, so other relays can tell its claims from those of a relay that is gone.
  [[nodiscard]] std::int64_t relay_id() const noexcept { return s_->link.relay_id; }
  [[nodiscard]] const std::string& schema() const noexcept { return s_->link.options.schema; }

  /// An application transaction on this storage's connection: outbox writes made on this
  /// thread while it is open join it, and all of it commits or rolls back together. Rolls back
  /// unless `commit()` succeeded. Other threads' calls wait until it ends.
  class transaction_guard : public detail::application_transaction<detail::postgres::link> {
   public:
    explicit transaction_guard(postgres_storage& storage) : application_transaction(storage.s_->link) {}
  };
  [[nodiscard]] transaction_guard transaction() { return transaction_guard(*this); }

  /// Ends the LISTEN connection when destroyed.
  class subscription {
   public:
    subscription() = default;
    explicit subscription(std::unique_ptr<detail::postgres::listener> l) noexcept : listener_(std::move(l)) {}
    [[nodiscard]] bool listening() const noexcept { return listener_ != nullptr; }

   private:
    std::unique_ptr<detail::postgres::listener> listener_;
  };

  /// Calls `wake` (from a thread of its own) whenever events are appended to this schema, by
  /// any relay or program, until the returned subscription is destroyed. `Outbox` subscribes
  /// its runner. Nothing (an empty subscription) when `options.listen` is off or there is no
  /// conninfo to listen with.
  [[nodiscard]] subscription on_new_events(std::function<void()> wake) const {
    const auto& l = s_->link;
    if (!l.options.listen) return {};
    std::string info = l.conninfo.empty() ? l.options.listen_conninfo : l.conninfo;
    if (info.empty()) info = conninfo_of(l.conn());
    if (info.empty()) return {};
    return subscription(std::make_unique<detail::postgres::listener>(
        std::move(info), detail::postgres::channel_of(l.options.schema), std::move(wake)));
  }

  // ---- outbox::storage -----------------------------------------------------------------------

  result<void> append(std::span<event> events) {
    if (auto valid = detail::postgres::validate_batch(events); !valid) return valid;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> before;  // seq and lease, restored if refused
    before.reserve(events.size());
    for (const event& e : events) before.emplace_back(e.seq, e.lease);
    auto done = s_->writer.write([&] { return detail::postgres::insert_events(s_->link, events); },
                                 {detail::postgres::write_shape::one_round_trip});
    if (!done)
      for (std::size_t i = 0; i < events.size(); ++i) std::tie(events[i].seq, events[i].lease) = before[i];
    return done;
  }

  result<std::size_t> claim(const claim_request& request, std::vector<event>& out) {
    return locked([&] { return detail::postgres::claim_events(s_->link, request, out); });
  }

  result<std::size_t> record(std::span<outcome> outcomes) {
    // Two relays writing back onto the same entities can deadlock; the server cancels one,
    // which then runs again.
    for (int tries = 1;; ++tries) {
      auto r = locked([&] { return detail::postgres::record_outcomes(s_->link, outcomes); });
      if (r || tries == 3 || r.error().code != make_error_code(postgres_errc::serialization_failure)) return r;
    }
  }

  result<std::optional<event>> find(event_id id) {
    return locked([&] { return detail::postgres::find_event(s_->link, id); });
  }
  result<std::vector<event>> query(const event_query& q) {
    return locked([&] { return detail::postgres::query_events(s_->link, q); });
  }
  /// Counts and ages for `user` (all users if none), aged at `now`.
  result<event_stats> stats(std::optional<std::string_view> user, timestamp now) {
    return locked([&] { return detail::postgres::event_statistics(s_->link, user, now); });
  }
  result<event_stats> stats(std::optional<std::string_view> user = std::nullopt) {
    return stats(user, system_clock{}.now());
  }
  result<std::optional<timestamp>> next_wake(std::string_view user, timestamp) {
    return locked([&] { return detail::postgres::next_wake_of(s_->link, user); });
  }

  result<std::size_t> reset(std::span<const event_id> ids, timestamp now) {
    return locked([&] { return detail::postgres::reset_events(s_->link, ids, now); });
  }
  result<std::size_t> reset_dead(std::optional<std::string_view> user, timestamp now) {
    return locked([&] { return detail::postgres::reset_dead_events(s_->link, user, now); });
  }
  result<std::size_t> purge_completed(timestamp before) {
    return locked([&] { return detail::postgres::purge_completed_events(s_->link, before); });
  }
  result<std::size_t> clamp_schedule(timestamp retry_limit, timestamp lease_limit) {
    return locked([&] { return detail::postgres::clamp_events(s_->link, retry_limit, lease_limit); });
  }

  // ---- outbox::entity_storage ------------------------------------------------------------------

  result<void> commit(const entity_change& change) {
    return s_->writer.write([&] { return detail::postgres::commit_change(s_->link, change); });
  }
  result<std::optional<entity_record>> find_entity(std::string_view collection, std::string_view id) {
    return locked([&] {
      return detail::postgres::find_entity_row(
          s_->link, {s_->link.sql.find_entity, {std::string(collection), std::string(id)}}, "finding an entity");
    });
  }
  result<std::optional<entity_record>> find_entity_by_key(std::string_view collection, std::string_view user,
                                                          std::string_view natural_key) {
    return locked([&] {
      return detail::postgres::find_entity_row(
          s_->link,
          {s_->link.sql.find_entity_by_key, {std::string(collection), std::string(user), std::string(natural_key)}},
          "finding an entity by natural key");
    });
  }
  result<std::vector<entity_record>> query_entities(const entity_query& q) {
    return locked([&] { return detail::postgres::query_entity_rows(s_->link, q); });
  }

  /// Commits that served a group of writers, and writers served: for tests and tuning.
  struct group_commit_stats {
    std::uint64_t commits = 0;
    std::uint64_t writes = 0;
  };
  [[nodiscard]] group_commit_stats commit_stats() const noexcept {
    return {s_->writer.commits.load(), s_->writer.writes.load()};
  }

 private:
  struct state {
    detail::postgres::link link;
    detail::postgres::group_commit writer{detail::postgres::group_engine{&link}};
    state(detail::postgres::connection_handle h, std::string conninfo, postgres_options o)
        : link(std::move(h), std::move(conninfo), std::move(o)) {}
  };
  explicit postgres_storage(std::unique_ptr<state> s) noexcept : s_(std::move(s)) {}

  /// Runs `f` holding the connection.
  template <class F>
  auto locked(F&& f) -> decltype(f()) {
    auto lock = s_->link.lock_connection();
    return f();
  }

  /// A conninfo for a second connection like `conn` (the listener of an adopted connection).
  static std::string conninfo_of(PGconn* conn) {
    std::string info;
    PQconninfoOption* options = PQconninfo(conn);
    if (!options) return info;
    for (PQconninfoOption* o = options; o->keyword; ++o) {
      if (!o->val || !*o->val) continue;
      std::string value;
      for (const char* p = o->val; *p; ++p) {
        if (*p == '\'' || *p == '\\') value += '\\';
        value += *p;
      }
      info += std::string(o->keyword) + "='" + value + "' ";
    }
    PQconninfoFree(options);
    return info;
  }

  std::unique_ptr<state> s_;
};

}  // namespace outbox
