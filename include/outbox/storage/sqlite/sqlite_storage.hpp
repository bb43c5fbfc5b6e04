#pragma once
/// \file
/// `outbox::sqlite_storage`, the public class, and its `transaction_guard`. Include
/// <outbox/storage/sqlite.hpp>, which documents the storage.

#include <sqlite3.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "outbox/clock.hpp"
#include "outbox/entity.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage.hpp"
#include "outbox/storage/sqlite/options.hpp"
#include "outbox/storage/sqlite/state.hpp"
#include "outbox/storage/sqlite/wal_gather.hpp"

namespace outbox {

/// A durable `outbox::storage` and `outbox::entity_storage` on SQLite. Movable; thread-safe.
class sqlite_storage {
 public:
  /// Opens (creating if needed) a database file. Returns a typed error instead of throwing:
  /// io_error (cannot open), corrupt_data (not a database), schema_too_new, busy.
  [[nodiscard]] static result<sqlite_storage> open(const std::string& path, sqlite_options options = {}) {
    sqlite3* db = nullptr;
    const bool gather = options.gather_wal_writes && options.synchronous == sqlite_options::sync_mode::full;
    const char* base = options.vfs.empty() ? nullptr : options.vfs.c_str();
    if (base && !sqlite3_vfs_find(base))
      return error(errc::invalid_argument, "outbox::sqlite_storage::open: no SQLite VFS is registered as \"" + options.vfs + "\"");
    const char* vfs = gather ? detail::sqlite::wal_gather::vfs_name(base) : base;
    const int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                   vfs ? vfs : base);
    if (rc != SQLITE_OK) {
      auto e = detail::sqlite::failure(db, rc, "opening " + path);
      sqlite3_close_v2(db);
      return e;
    }
    auto core = std::make_unique<state>(db, true, path, options);
    if (auto ready = core->initialise(); !ready) return ready.error();
    return sqlite_storage(std::move(core));
  }

  /// Works on the application's connection, which must outlive the storage and stay open.
  [[nodiscard]] static result<sqlite_storage> adopt(sqlite3* db, sqlite_options options = {}) {
    if (!db) return error(errc::invalid_argument, "outbox::sqlite_storage::adopt: null connection");
    const char* file = sqlite3_db_filename(db, "main");
    auto core = std::make_unique<state>(db, false, file ? file : "", options);
    if (auto ready = core->initialise(); !ready) return ready.error();
    return sqlite_storage(std::move(core));
  }

  /// Throws `outbox::exception` with the same typed error `open` returns.
  explicit sqlite_storage(const std::string& path, sqlite_options options = {})
      : sqlite_storage(open(path, options).value()) {}

  sqlite_storage(sqlite_storage&&) noexcept = default;
  sqlite_storage& operator=(sqlite_storage&&) noexcept = default;
  ~sqlite_storage() = default;

  /// The connection, for the application's own statements (see `transaction()`).
  [[nodiscard]] sqlite3* handle() const noexcept { return s_->db; }

  /// An application transaction on this connection: outbox writes made while it is open join
  /// it, and all of it commits or rolls back together. Rolls back unless `commit()` succeeded.
  class transaction_guard : public detail::application_transaction<detail::sqlite::connection> {
   public:
    explicit transaction_guard(sqlite_storage& storage) : application_transaction(*storage.s_) {}
  };
  [[nodiscard]] transaction_guard transaction() { return transaction_guard(*this); }

  // ---- outbox::storage -----------------------------------------------------------------------

  result<void> append(std::span<event> events) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> before;  // seq and lease, restored if refused
    before.reserve(events.size());
    for (const event& e : events) before.emplace_back(e.seq, e.lease);
    auto done = s_->write([&]() -> result<void> {
      detail::sqlite::status_tally tally;
      for (event& e : events) {
        if (auto inserted = s_->insert_event(e, tally); !inserted) return inserted;
      }
      return s_->apply_counts(tally);
    });
    if (!done)
      for (std::size_t i = 0; i < events.size(); ++i) std::tie(events[i].seq, events[i].lease) = before[i];
    return done;
  }

  result<std::size_t> claim(const claim_request& request, std::vector<event>& out) {
    std::size_t claimed = 0;
    const std::size_t before = out.size();
    auto done = s_->write([&]() -> result<void> {
      out.resize(before);  // a retried group must not duplicate
      auto r = s_->claim(request, out);
      if (!r) return r.error();
      claimed = *r;
      return {};
    });
    if (!done) {
      out.resize(before);
      return done.error();
    }
    return claimed;
  }

  result<std::size_t> record(std::span<outcome> outcomes) {
    std::size_t applied = 0;
    auto done = s_->write([&]() -> result<void> {
      auto r = s_->record(outcomes);
      if (!r) return r.error();
      applied = *r;
      return {};
    });
    if (!done) {
      for (auto& o : outcomes) o.applied = false;
      return done.error();
    }
    return applied;
  }

  result<std::optional<event>> find(event_id id) { return s_->find(id); }
  result<std::vector<event>> query(const event_query& q) { return s_->query(q); }
  /// Counts and ages for `user` (all users if none), aged at `now`: the shape every storage and
  /// the outbox share. `now` is the outbox's clock; without it, the wall clock.
  result<event_stats> stats(std::optional<std::string_view> user, timestamp now) { return s_->stats(user, now); }
  result<event_stats> stats(std::optional<std::string_view> user = std::nullopt) {
    return stats(user, system_clock{}.now());
  }
  result<std::optional<timestamp>> next_wake(std::string_view user, timestamp now) { return s_->next_wake(user, now); }

  result<std::size_t> reset(std::span<const event_id> ids, timestamp now) {
    return counted_write([&] { return s_->reset(ids, now); });
  }
  result<std::size_t> reset_dead(std::optional<std::string_view> user, timestamp now) {
    return counted_write([&] { return s_->reset_dead(user, now); });
  }
  result<std::size_t> purge_completed(timestamp before) {
    return counted_write([&] { return s_->purge_completed(before); });
  }
  result<std::size_t> clamp_schedule(timestamp retry_limit, timestamp lease_limit) {
    return counted_write([&] { return s_->clamp_schedule(retry_limit, lease_limit); });
  }

  // ---- outbox::entity_storage ------------------------------------------------------------------

  result<void> commit(const entity_change& change) {
    return s_->write([&]() -> result<void> { return s_->commit(change); });
  }
  result<std::optional<entity_record>> find_entity(std::string_view collection, std::string_view id) {
    return s_->find_entity(collection, id);
  }
  result<std::optional<entity_record>> find_entity_by_key(std::string_view collection, std::string_view user,
                                                          std::string_view natural_key) {
    return s_->find_entity_by_key(collection, user, natural_key);
  }
  result<std::vector<entity_record>> query_entities(const entity_query& q) { return s_->query_entities(q); }

  /// Commits that served more than one caller, and callers served: for tests and tuning.
  struct group_commit_stats {
    std::uint64_t commits = 0;
    std::uint64_t writes = 0;
  };
  [[nodiscard]] group_commit_stats commit_stats() const noexcept {
    return {s_->writer.commits.load(), s_->writer.writes.load()};
  }

  /// The query plan SQLite chooses for the claim, one line per step: the test that proves no
  /// sort ("USE TEMP B-TREE") and no scan serves the claim reads it.
  [[nodiscard]] std::vector<std::string> explain_claim() { return s_->explain_claim(); }
  /// The query plans of stats(), for one user and for all, one line per step: the test that proves
  /// none of them reads the completed history reads it.
  [[nodiscard]] std::vector<std::string> explain_stats() { return s_->explain_stats(); }
  /// The query plan of query(q), one line per step: the test that proves an entity's or a type's
  /// page is read through its index, without a sort, reads it.
  [[nodiscard]] std::vector<std::string> explain_query(const event_query& q) { return s_->explain_query(q); }

 private:
  using state = detail::sqlite::storage_state;
  explicit sqlite_storage(std::unique_ptr<state> s) : s_(std::move(s)) {}

  template <class F>
  result<std::size_t> counted_write(F&& f) {
    std::size_t count = 0;
    auto done = s_->write([&]() -> result<void> {
      auto r = f();
      if (!r) return r.error();
      count = *r;
      return {};
    });
    if (!done) return done.error();
    return count;
  }

  std::unique_ptr<state> s_;
};

}  // namespace outbox
