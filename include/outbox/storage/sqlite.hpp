#pragma once
/// \file
/// `outbox::sqlite_storage`: the embedded, durable default. One SQLite database holds the outbox
/// and the entities, so an entity change and its event commit together. Link `outbox::sqlite`
/// (SQLite 3.35 or newer; Debian: libsqlite3-dev). Nothing else in outbox includes this header.
///
///     auto storage = outbox::sqlite_storage::open("app.db").value();   // or the throwing ctor
///     outbox::Outbox<outbox::sqlite_storage, my_transport> box(std::move(storage), my_transport{});
///
/// Durability: a call that writes returns after its transaction committed. With the default
/// `synchronous = full` that survives power loss; `normal` survives a crash of the process but
/// may lose the last transactions on power loss (WAL mode, the fsync happens at checkpoints).
/// Under `full`, a database `open()` opened writes each commit's WAL pages with one call just
/// before the sync (see detail::sqlite::wal_gather; `sqlite_options::gather_wal_writes`).
///
/// Group commit: concurrent writers (enqueue, save, claim, record from several threads) are
/// gathered into one transaction with one sync, and each caller returns after the commit that
/// made its work durable. If one caller's work fails, the group runs again with each caller in its
/// own savepoint, so that failure rolls back only its own work. A new leader waits a little (at
/// most half the last commit, 200 µs) for the writers the last commit released, so steady
/// concurrent writers all share each commit.
///
/// Adopting a connection: `sqlite_storage::adopt(db)` works on the application's own `sqlite3*`.
/// A write called while that connection is inside the application's transaction runs inline in a
/// savepoint of it, so the application's rows and the outbox event commit or roll back together;
/// `transaction()` opens such a transaction with an RAII guard. The application must not use the
/// connection from another thread while the storage does.
///
/// Schema: created and migrated by the library. The schema version lives in the `outbox_meta`
/// table; on a database the storage opened itself it is mirrored in `PRAGMA user_version` (on an
/// adopted connection user_version belongs to the application and is left alone). A database
/// written by a newer version is refused with `errc::schema_too_new` and not modified.
///
/// Claims are served by indexes in claim order (no sort, no scan of waiting events): each
/// ordering key with undelivered events has one row in `outbox_keys` describing its head; ready
/// heads are read in (user, priority desc, seq) order, due retries found in (user, retry time)
/// order, expired leases in lease order.
///
/// Inspection reads no history: `stats()` reads the completed count each user's outcomes and
/// purges keep (schema 3). The other statuses it counts through the (status, user, seq) index
/// once, and then keeps those counts in memory, moved by this connection's commits; another
/// connection's commit makes it count again. So a call costs the same however many events wait
/// and however many completed ones are kept.

#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "outbox/entity.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage.hpp"

namespace outbox {

/// How a database file is opened.
struct sqlite_options {
  enum class sync_mode : std::uint8_t {
    full,    ///< every commit is synced: survives power loss (default)
    normal,  ///< WAL synced at checkpoints: survives a process crash, not power loss
    off,     ///< never synced: for tests and throwaway data
  };
  sync_mode synchronous = sync_mode::full;
  std::chrono::milliseconds busy_timeout{5000};  ///< how long to wait for another writer
  bool group_commit = true;                      ///< share one transaction among concurrent writers
  /// With `synchronous = full`, on a database `open()` opened: each commit writes its WAL frames
  /// with one `pwrite` (per 64 KiB) just before its sync, instead of two per page. See
  /// detail::sqlite::wal_gather. Ignored by `adopt()`, whose connection keeps its own VFS.
  bool gather_wal_writes = true;
};

namespace detail::sqlite {

inline constexpr int schema_version = 4;

/// A VFS over the default one that gathers the writes to a WAL file and writes them at once.
///
/// SQLite writes each WAL frame as two calls (a 24-byte header, then the page), so a commit of
/// a few pages makes ten or more `pwrite` calls before its sync. Right after a sync each took
/// about 9 µs on the test VM (1.8 µs in a tight loop), and one call of the same bytes about what
/// two of them do (bench/README.md, ninth session). Here a WAL file's writes that continue one another
/// are kept in memory and written (in pieces of at most 64 KiB, since the unix VFS takes less
/// than 128 KiB a call) when SQLite syncs the file, and before anything that could observe the
/// file: a read, a size query, a truncation, a file control, a write elsewhere, closing.
///
/// At most `pending_limit` bytes wait: a transaction that spills pages to bound its memory still
/// does.
///
/// Why that is safe, with `synchronous = full` only (the storage uses it for no other mode):
/// SQLite publishes a commit's frames to other connections by updating the WAL index after it
/// has synced them, so nothing reads those frames before the sync that writes them. A crash before
/// the sync loses frames no commit had acknowledged, as a crash between SQLite's own writes would.
/// SQLite writes a frame after the sync only to pad to a sector boundary, which it does only
/// when the files do not report `SQLITE_IOCAP_POWERSAFE_OVERWRITE` (the unix VFS reports it
/// unless the database is opened with `psow=0`): such a WAL file's writes pass through
/// ungathered. Other files (the database) are the default VFS's own.
namespace wal_gather {

struct file {
  sqlite3_file base;  // must come first: SQLite sees this
  sqlite3_io_methods methods;
  sqlite3_file* real;
  bool gather;
  std::string pending;          // bytes not yet written, from `pending_at` on
  sqlite3_int64 pending_at = 0;
};

/// Gathered bytes are written once they reach this much, whether or not SQLite syncs.
inline constexpr std::size_t pending_limit = 1 << 20;

/// Where the wrapped file lives: after ours, aligned as SQLite aligns its allocations.
inline constexpr std::size_t real_offset = (sizeof(file) + 15) / 16 * 16;

inline file* self(sqlite3_file* f) noexcept { return reinterpret_cast<file*>(f); }

inline int write_pending(file* f) noexcept {
  int rc = SQLITE_OK;
  for (std::size_t at = 0; at < f->pending.size() && rc == SQLITE_OK; at += 65536) {
    const std::size_t n = std::min<std::size_t>(65536, f->pending.size() - at);
    rc = f->real->pMethods->xWrite(f->real, f->pending.data() + at, static_cast<int>(n),
                                   f->pending_at + static_cast<sqlite3_int64>(at));
  }
  f->pending.clear();  // written or failed: a failed commit rewrites its frames
  return rc;
}

inline int x_close(sqlite3_file* p) {
  file* f = self(p);
  const int written = write_pending(f);
  const int rc = f->real->pMethods->xClose(f->real);
  f->~file();
  return written != SQLITE_OK ? written : rc;
}
inline int x_read(sqlite3_file* p, void* out, int n, sqlite3_int64 at) {
  file* f = self(p);
  if (const int rc = write_pending(f); rc != SQLITE_OK) return rc;
  return f->real->pMethods->xRead(f->real, out, n, at);
}
inline int x_write(sqlite3_file* p, const void* data, int n, sqlite3_int64 at) {
  file* f = self(p);
  if (!f->gather) return f->real->pMethods->xWrite(f->real, data, n, at);
  if (!f->pending.empty() && at != f->pending_at + static_cast<sqlite3_int64>(f->pending.size())) {
    if (const int rc = write_pending(f); rc != SQLITE_OK) return rc;
  }
  try {
    if (f->pending.empty()) f->pending_at = at;
    f->pending.append(static_cast<const char*>(data), static_cast<std::size_t>(n));
  } catch (...) {  // out of memory: write what there is, then this one directly
    if (const int rc = write_pending(f); rc != SQLITE_OK) return rc;
    return f->real->pMethods->xWrite(f->real, data, n, at);
  }
  // A large transaction spills pages into the WAL to bound its memory: so does this.
  if (f->pending.size() >= pending_limit) return write_pending(f);
  return SQLITE_OK;
}
inline int x_truncate(sqlite3_file* p, sqlite3_int64 size) {
  file* f = self(p);
  if (const int rc = write_pending(f); rc != SQLITE_OK) return rc;
  return f->real->pMethods->xTruncate(f->real, size);
}
inline int x_sync(sqlite3_file* p, int flags) {
  file* f = self(p);
  if (const int rc = write_pending(f); rc != SQLITE_OK) return rc;
  return f->real->pMethods->xSync(f->real, flags);
}
inline int x_file_size(sqlite3_file* p, sqlite3_int64* size) {
  file* f = self(p);
  if (const int rc = write_pending(f); rc != SQLITE_OK) return rc;
  return f->real->pMethods->xFileSize(f->real, size);
}
inline int x_lock(sqlite3_file* p, int level) { return self(p)->real->pMethods->xLock(self(p)->real, level); }
inline int x_unlock(sqlite3_file* p, int level) {
  file* f = self(p);
  if (const int rc = write_pending(f); rc != SQLITE_OK) return rc;
  return f->real->pMethods->xUnlock(f->real, level);
}
inline int x_check_reserved_lock(sqlite3_file* p, int* out) {
  return self(p)->real->pMethods->xCheckReservedLock(self(p)->real, out);
}
inline int x_file_control(sqlite3_file* p, int op, void* arg) {
  file* f = self(p);
  if (const int rc = write_pending(f); rc != SQLITE_OK) return rc;
  return f->real->pMethods->xFileControl(f->real, op, arg);
}
inline int x_sector_size(sqlite3_file* p) { return self(p)->real->pMethods->xSectorSize(self(p)->real); }
inline int x_device_characteristics(sqlite3_file* p) {
  return self(p)->real->pMethods->xDeviceCharacteristics(self(p)->real);
}
inline int x_shm_map(sqlite3_file* p, int region, int size, int extend, void volatile** out) {
  return self(p)->real->pMethods->xShmMap(self(p)->real, region, size, extend, out);
}
inline int x_shm_lock(sqlite3_file* p, int offset, int n, int flags) {
  return self(p)->real->pMethods->xShmLock(self(p)->real, offset, n, flags);
}
inline void x_shm_barrier(sqlite3_file* p) { self(p)->real->pMethods->xShmBarrier(self(p)->real); }
inline int x_shm_unmap(sqlite3_file* p, int remove) {
  return self(p)->real->pMethods->xShmUnmap(self(p)->real, remove);
}
inline int x_fetch(sqlite3_file* p, sqlite3_int64 at, int n, void** out) {
  file* f = self(p);
  if (const int rc = write_pending(f); rc != SQLITE_OK) return rc;
  return f->real->pMethods->xFetch(f->real, at, n, out);
}
inline int x_unfetch(sqlite3_file* p, sqlite3_int64 at, void* mapped) {
  return self(p)->real->pMethods->xUnfetch(self(p)->real, at, mapped);
}

inline sqlite3_vfs*& base_vfs() noexcept {
  static sqlite3_vfs* base = nullptr;
  return base;
}

inline int x_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* p, int flags, int* out_flags) {
  sqlite3_vfs* base = base_vfs();
  if ((flags & SQLITE_OPEN_WAL) == 0) return base->xOpen(base, name, p, flags, out_flags);  // the default's own
  auto* real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(p) + real_offset);
  std::memset(real, 0, static_cast<std::size_t>(base->szOsFile));
  const int rc = base->xOpen(base, name, real, flags, out_flags);
  if (real->pMethods == nullptr) {  // nothing to close
    p->pMethods = nullptr;
    return rc;
  }
  file* f = new (p) file{};
  f->real = real;
  const sqlite3_io_methods& r = *real->pMethods;
  f->gather = rc == SQLITE_OK && (r.xDeviceCharacteristics(real) & SQLITE_IOCAP_POWERSAFE_OVERWRITE) != 0;
  f->methods = sqlite3_io_methods{std::min(r.iVersion, 3), x_close, x_read, x_write, x_truncate, x_sync,
                                  x_file_size, x_lock, x_unlock, x_check_reserved_lock, x_file_control,
                                  x_sector_size, x_device_characteristics,
                                  r.iVersion >= 2 ? x_shm_map : nullptr, r.iVersion >= 2 ? x_shm_lock : nullptr,
                                  r.iVersion >= 2 ? x_shm_barrier : nullptr, r.iVersion >= 2 ? x_shm_unmap : nullptr,
                                  r.iVersion >= 3 ? x_fetch : nullptr, r.iVersion >= 3 ? x_unfetch : nullptr};
  f->base.pMethods = &f->methods;
  return rc;
}

inline constexpr const char* vfs_id = "outbox-wal-gather";

/// Registers the VFS (once, not as the default) over the default VFS of that moment; its name,
/// or nullptr if SQLite has no default VFS or refused it.
inline const char* vfs_name() {
  static const bool registered = [] {
    sqlite3_vfs* base = sqlite3_vfs_find(nullptr);
    if (base == nullptr || base->iVersion < 1) return false;
    base_vfs() = base;
    static sqlite3_vfs vfs = *base;  // every other method is the default's, with its own data
    vfs.szOsFile = static_cast<int>(real_offset) + base->szOsFile;
    vfs.pNext = nullptr;
    vfs.zName = vfs_id;
    vfs.xOpen = x_open;
    return sqlite3_vfs_register(&vfs, 0) == SQLITE_OK;
  }();
  return registered ? vfs_id : nullptr;
}

}  // namespace wal_gather

inline errc code_of(int rc) noexcept {
  switch (rc & 0xFF) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return errc::busy;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return errc::corrupt_data;
    case SQLITE_FULL: return errc::disk_full;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY: return errc::io_error;
    case SQLITE_CONSTRAINT: return errc::invalid_argument;
    default: return errc::storage_failure;
  }
}

inline outbox::error failure(sqlite3* db, int rc, std::string_view what) {
  std::string message(what);
  message += ": ";
  message += db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return outbox::error(code_of(rc), std::move(message));
}

/// A prepared statement, reset after each use; binds by 1-based index.
class statement {
 public:
  statement() = default;
  statement(sqlite3* db, std::string_view sql) : db_(db) {
    const int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &stmt_,
                                      nullptr);
    if (rc != SQLITE_OK) prepare_error_ = failure(db, rc, "preparing \"" + std::string(sql.substr(0, 60)) + "...\"");
  }
  statement(statement&& other) noexcept
      : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)), prepare_error_(std::move(other.prepare_error_)) {}
  statement& operator=(statement&& other) noexcept {
    if (this != &other) {
      sqlite3_finalize(stmt_);
      db_ = other.db_;
      stmt_ = std::exchange(other.stmt_, nullptr);
      prepare_error_ = std::move(other.prepare_error_);
    }
    return *this;
  }
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;
  ~statement() { sqlite3_finalize(stmt_); }

  [[nodiscard]] const std::optional<outbox::error>& prepare_error() const noexcept { return prepare_error_; }

  statement& bind(int i, std::int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  statement& bind(int i, int v) { return bind(i, static_cast<std::int64_t>(v)); }
  statement& bind(int i, std::uint64_t v) { return bind(i, static_cast<std::int64_t>(v)); }
  statement& bind(int i, timestamp t) { return bind(i, to_micros(t)); }
  /// Text and blobs are bound by reference (SQLITE_STATIC), not copied: the bytes must stay
  /// alive and unchanged until the statement is reset, which also clears the bindings. Every
  /// use binds, steps and resets within one scope, over strings that outlive it. (Copying cost
  /// an allocation and a copy per bound string: about 6 % of an enqueue's instructions.)
  statement& bind(int i, std::string_view text) {
    sqlite3_bind_text(stmt_, i, text.data(), static_cast<int>(text.size()), SQLITE_STATIC);
    return *this;
  }
  statement& bind_blob(int i, std::string_view bytes) {
    sqlite3_bind_blob(stmt_, i, bytes.data(), static_cast<int>(bytes.size()), SQLITE_STATIC);
    return *this;
  }
  // A temporary string would be gone before the step: refused at compile time.
  statement& bind(int, std::string&&) = delete;
  statement& bind_blob(int, std::string&&) = delete;
  statement& bind(int i, const event_id& id) {
    unsigned char bytes[16];
    for (int b = 0; b < 8; ++b) {
      bytes[b] = static_cast<unsigned char>(id.high >> (56 - 8 * b));
      bytes[8 + b] = static_cast<unsigned char>(id.low >> (56 - 8 * b));
    }
    sqlite3_bind_blob(stmt_, i, bytes, 16, SQLITE_TRANSIENT);  // a local: copied
    return *this;
  }
  statement& bind_null(int i) {
    sqlite3_bind_null(stmt_, i);
    return *this;
  }

  /// SQLITE_ROW or SQLITE_DONE; anything else is an error code.
  int step() { return sqlite3_step(stmt_); }
  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  [[nodiscard]] std::int64_t int64(int col) const { return sqlite3_column_int64(stmt_, col); }
  [[nodiscard]] int integer(int col) const { return sqlite3_column_int(stmt_, col); }
  [[nodiscard]] timestamp time(int col) const { return from_micros(int64(col)); }
  [[nodiscard]] bool is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  [[nodiscard]] std::string text(int col) const {
    const auto* p = sqlite3_column_blob(stmt_, col);  // blob access keeps embedded NULs
    const int n = sqlite3_column_bytes(stmt_, col);
    return p ? std::string(static_cast<const char*>(p), static_cast<std::size_t>(n)) : std::string();
  }
  [[nodiscard]] event_id id(int col) const {
    event_id id;
    const auto* p = static_cast<const unsigned char*>(sqlite3_column_blob(stmt_, col));
    if (!p || sqlite3_column_bytes(stmt_, col) != 16) return id;
    for (int b = 0; b < 8; ++b) {
      id.high = (id.high << 8) | p[b];
      id.low = (id.low << 8) | p[8 + b];
    }
    return id;
  }

 private:
  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  std::optional<outbox::error> prepare_error_;
};

/// Resets a statement when leaving scope, whatever the path.
struct reset_on_exit {
  statement& s;
  ~reset_on_exit() { s.reset(); }
};

inline constexpr std::string_view schema_sql = R"sql(
CREATE TABLE IF NOT EXISTS outbox_meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS outbox_events (
  seq          INTEGER PRIMARY KEY,
  id           BLOB    NOT NULL,
  type         TEXT    NOT NULL,
  entity_id    TEXT    NOT NULL,
  entity_type  TEXT    NOT NULL,
  ordering_key TEXT    NOT NULL,
  user_id      TEXT    NOT NULL,
  payload      BLOB    NOT NULL,
  priority     INTEGER NOT NULL,
  status       INTEGER NOT NULL,
  attempts     INTEGER NOT NULL,
  max_attempts INTEGER NOT NULL,
  created_at   INTEGER NOT NULL,
  updated_at   INTEGER NOT NULL,
  retry_after  INTEGER NOT NULL,
  completed_at INTEGER NOT NULL,
  last_error   TEXT    NOT NULL,
  remote_id    TEXT    NOT NULL,
  lease        INTEGER NOT NULL,
  lease_until  INTEGER NOT NULL
);
-- UUID-v7 ids arrive in time order, so this unique index grows at its right edge.
CREATE UNIQUE INDEX IF NOT EXISTS outbox_events_by_id ON outbox_events(id);
-- Each ordering key's events in append order: finds a line's next head from where the line
-- stood (a seek, then the next undelivered entry). Deliberately not partial on status: a status
-- change (claim, outcome) then leaves it alone, where a partial index rewrites the key's leaf,
-- one scattered page per event and commit. (Schema 1 had it partial; initialise() migrates it.)
CREATE INDEX IF NOT EXISTS outbox_events_line ON outbox_events(user_id, ordering_key, seq);
-- Claims in flight by lease end: expired leases without a scan.
CREATE INDEX IF NOT EXISTS outbox_events_leases ON outbox_events(lease_until) WHERE status = 1;
-- Events by status, then user, in append order: counts of the statuses an event leaves (pending,
-- processing, failed, dead) cost what is waiting, not the whole history; dead and late events are
-- found without a scan; a user's page of one status is one range. Status leads, so the queries
-- that name no user use it too. (Schema 2 led with user_id; initialise() migrates it.)
CREATE INDEX IF NOT EXISTS outbox_events_status ON outbox_events(status, user_id, seq);
-- How many completed events each user has. Completed events are the audit trail and grow until
-- purged, so they are counted where they change (an outcome recorded, a purge), in the same
-- transaction, rather than counted again by every stats() call.
CREATE TABLE IF NOT EXISTS outbox_completed (
  user_id TEXT    PRIMARY KEY,
  n       INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per ordering key that has undelivered events: where its head stands.
-- state 0: head ready; 1: head failed, claimable from ready_at; 2: an event of the key in flight.
CREATE TABLE IF NOT EXISTS outbox_keys (
  user_id      TEXT    NOT NULL,
  ordering_key TEXT    NOT NULL,
  state        INTEGER NOT NULL,
  priority     INTEGER NOT NULL,
  head_seq     INTEGER NOT NULL,
  ready_at     INTEGER NOT NULL,
  PRIMARY KEY (user_id, ordering_key)
) WITHOUT ROWID;
-- Ready heads in claim order, and failed heads by retry time. Each holds only the lines in its
-- state, so a line's trip through a delivery (0 -> 2 when claimed, 2 -> 0 for its next head)
-- touches the first index once each way and the second not at all, where full indexes took a
-- delete and an insert in both every time (about 13 % of a drained event's instructions).
-- `state` stays a column so the reads are covered. (Schema 3 and before had them full.)
CREATE INDEX IF NOT EXISTS outbox_keys_claim ON outbox_keys(user_id, state, priority DESC, head_seq) WHERE state = 0;
CREATE INDEX IF NOT EXISTS outbox_keys_due ON outbox_keys(user_id, state, ready_at) WHERE state = 1;

CREATE TABLE IF NOT EXISTS outbox_entities (
  collection  TEXT    NOT NULL,
  id          TEXT    NOT NULL,
  user_id     TEXT    NOT NULL,
  natural_key TEXT,
  payload     BLOB    NOT NULL,
  occurred_at INTEGER NOT NULL,
  sync        INTEGER NOT NULL,
  remote_id   TEXT    NOT NULL,
  sync_error  TEXT    NOT NULL,
  last_event  BLOB,
  version     INTEGER NOT NULL,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL,
  PRIMARY KEY (collection, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS outbox_entities_natural ON outbox_entities(collection, user_id, natural_key)
  WHERE natural_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_entities_time ON outbox_entities(collection, user_id, occurred_at, id);
)sql";

/// The reads of a claim, in the order it runs them; explain_claim() shows their plans.
// The head's status (pending, or failed and due) comes along for the counts a claim moves.
inline constexpr std::string_view ready_heads_sql =
    "SELECT k.head_seq, e.status FROM outbox_keys k JOIN outbox_events e ON e.seq = k.head_seq "
    "WHERE k.user_id = ?1 AND k.state = 0 ORDER BY k.priority DESC, k.head_seq LIMIT ?2";
inline constexpr std::string_view promote_due_sql =
    "UPDATE outbox_keys SET state = 0 WHERE user_id = ?1 AND state = 1 AND ready_at <= ?2";
// Named index: the status index would serve `status = 1` too, but not in lease order.
inline constexpr std::string_view expired_leases_sql =
    "SELECT seq, attempts, max_attempts, user_id, ordering_key, entity_type, entity_id FROM outbox_events "
    "INDEXED BY outbox_events_leases WHERE status = 1 AND lease_until <= ?1 ORDER BY lease_until";
inline constexpr std::string_view line_head_sql =
    "SELECT seq, status, priority, retry_after FROM outbox_events INDEXED BY outbox_events_line "
    "WHERE user_id = ?1 AND ordering_key = ?2 AND seq >= ?3 AND status IN (0, 1, 3) ORDER BY seq LIMIT 1";

/// The queries of stats(), each for one user (?1) and for all users; explain_stats() shows their
/// plans. None reads the completed history: the events still waiting (pending, processing,
/// failed, dead) are counted through the status index, which also gives the lowest pending seq
/// (the oldest pending event, as the other storages define it); completed ones are read from
/// their per-user count.
struct user_or_all {
  std::string_view user, all;
};
// The statuses an event leaves (pending, processing, failed, dead), counted per user: when
// stats() finds no counts it can trust, then kept up to date by this connection's commits.
inline constexpr std::string_view count_waiting_sql =
    "SELECT status, user_id, count(*) FROM outbox_events WHERE status IN (0, 1, 3, 4) GROUP BY status, user_id";
// A user's first pending event in append order: the first entry of its range of the status index.
inline constexpr std::string_view oldest_pending_sql =
    "SELECT min(seq) FROM outbox_events WHERE status = 0 AND user_id = ?1";
inline constexpr user_or_all count_completed{"SELECT n FROM outbox_completed WHERE user_id = ?1",
                                             "SELECT sum(n) FROM outbox_completed"};
// A user's oldest claimable event: the earliest-appended head that is ready or due (?2 is now)
// and claimable (no expired lease counts: they become pending at the next claim). Sorting the
// user's lines by head read every one of them, and a line is an entity by default: 26 ms with
// 100k entities waiting. Instead, ready heads are read through their index, which orders them by
// priority and then head: the first head of each priority, found by seeking from one priority
// to the next (a few seeks, as a device uses a few priorities). Heads whose retry has come but
// that no claim has promoted yet are read from their range of the due index.
inline constexpr std::string_view oldest_due_sql =
    "WITH RECURSIVE p(v) AS ("
    " SELECT max(priority) FROM outbox_keys WHERE user_id = ?1 AND state = 0"
    " UNION ALL"
    " SELECT (SELECT max(priority) FROM outbox_keys WHERE user_id = ?1 AND state = 0 AND priority < p.v)"
    " FROM p WHERE p.v IS NOT NULL) "
    "SELECT min(head) FROM ("
    " SELECT (SELECT min(head_seq) FROM outbox_keys WHERE user_id = ?1 AND state = 0 AND priority = p.v) AS head"
    " FROM p WHERE p.v IS NOT NULL"
    " UNION ALL"
    " SELECT min(head_seq) FROM outbox_keys WHERE user_id = ?1 AND state = 1 AND ready_at <= ?2)";

inline constexpr std::string_view event_columns =
    "seq, id, type, entity_id, entity_type, ordering_key, user_id, payload, priority, status, attempts, "
    "max_attempts, created_at, updated_at, retry_after, completed_at, last_error, remote_id, lease, lease_until";

inline event read_event(const statement& s, int first = 0) {
  event e;
  e.seq = static_cast<std::uint64_t>(s.int64(first + 0));
  e.id = s.id(first + 1);
  e.type = s.text(first + 2);
  e.entity_id = s.text(first + 3);
  e.entity_type = s.text(first + 4);
  e.ordering_key = s.text(first + 5);
  e.user_id = s.text(first + 6);
  e.payload = s.text(first + 7);
  e.priority = s.integer(first + 8);
  e.status = static_cast<status>(s.integer(first + 9));
  e.attempts = s.integer(first + 10);
  e.max_attempts = s.integer(first + 11);
  e.created_at = s.time(first + 12);
  e.updated_at = s.time(first + 13);
  e.retry_after = s.time(first + 14);
  e.completed_at = s.time(first + 15);
  e.last_error = s.text(first + 16);
  e.remote_id = s.text(first + 17);
  e.lease = static_cast<std::uint64_t>(s.int64(first + 18));
  e.lease_until = s.time(first + 19);
  return e;
}

inline constexpr std::string_view entity_columns =
    "collection, id, user_id, natural_key, payload, occurred_at, sync, remote_id, sync_error, last_event, version, "
    "created_at, updated_at";

inline entity_record read_entity(const statement& s) {
  entity_record r;
  r.collection = s.text(0);
  r.id = s.text(1);
  r.user_id = s.text(2);
  r.natural_key = s.is_null(3) ? std::string() : s.text(3);
  r.payload = s.text(4);
  r.occurred_at = s.time(5);
  r.sync = static_cast<sync_status>(s.integer(6));
  r.remote_id = s.text(7);
  r.sync_error = s.text(8);
  r.last_event = s.is_null(9) ? event_id{} : s.id(9);
  r.version = static_cast<std::uint64_t>(s.int64(10));
  r.created_at = s.time(11);
  r.updated_at = s.time(12);
  return r;
}

}  // namespace detail::sqlite

/// A durable `outbox::storage` and `outbox::entity_storage` on SQLite. Movable; thread-safe.
class sqlite_storage {
 public:
  /// Opens (creating if needed) a database file. Returns a typed error instead of throwing:
  /// io_error (cannot open), corrupt_data (not a database), schema_too_new, busy.
  [[nodiscard]] static result<sqlite_storage> open(const std::string& path, sqlite_options options = {}) {
    sqlite3* db = nullptr;
    const bool gather = options.gather_wal_writes && options.synchronous == sqlite_options::sync_mode::full;
    const int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                   gather ? detail::sqlite::wal_gather::vfs_name() : nullptr);
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
  class transaction_guard {
   public:
    explicit transaction_guard(sqlite_storage& storage) : storage_(&storage) {
      auto lock = storage.s_->lock_connection();
      const int rc = sqlite3_exec(storage.s_->db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
      if (rc != SQLITE_OK) detail::throw_error(detail::sqlite::failure(storage.s_->db, rc, "BEGIN"));
      storage.s_->txn_owner = std::this_thread::get_id();
      open_ = true;
    }
    transaction_guard(const transaction_guard&) = delete;
    transaction_guard& operator=(const transaction_guard&) = delete;
    ~transaction_guard() { rollback(); }

    /// Commits; on failure the transaction is rolled back (nothing of it is stored).
    result<void> commit() {
      if (!open_) return error(errc::invalid_state, "transaction already finished");
      std::unique_lock lock(storage_->s_->db_mutex);
      const int rc = sqlite3_exec(storage_->s_->db, "COMMIT", nullptr, nullptr, nullptr);
      if (rc != SQLITE_OK) {
        auto e = detail::sqlite::failure(storage_->s_->db, rc, "COMMIT");
        lock.unlock();
        rollback();
        return e;
      }
      finish(lock);
      return {};
    }
    void rollback() noexcept {
      if (!open_) return;
      std::unique_lock lock(storage_->s_->db_mutex);
      sqlite3_exec(storage_->s_->db, "ROLLBACK", nullptr, nullptr, nullptr);
      finish(lock);
    }

   private:
    void finish(std::unique_lock<std::mutex>& lock) noexcept {
      open_ = false;
      storage_->s_->txn_owner = std::thread::id();
      lock.unlock();
      storage_->s_->txn_cv.notify_all();
    }

    sqlite_storage* storage_;
    bool open_ = false;
  };
  [[nodiscard]] transaction_guard transaction() { return transaction_guard(*this); }

  // ---- outbox::storage -----------------------------------------------------------------------

  result<void> append(std::span<event> events) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> before;  // seq and lease, restored if refused
    before.reserve(events.size());
    for (const event& e : events) before.emplace_back(e.seq, e.lease);
    auto done = s_->write([&]() -> result<void> {
      state::status_tally tally;
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
  result<event_stats> stats(std::optional<std::string_view> user, timestamp now) { return s_->stats(user, now); }
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
    return {s_->commits.load(), s_->writes.load()};
  }

  /// The query plan SQLite chooses for the claim, one line per step: the test that proves no
  /// sort ("USE TEMP B-TREE") and no scan serves the claim reads it.
  [[nodiscard]] std::vector<std::string> explain_claim() { return s_->explain_claim(); }
  /// The query plans of stats(), for one user and for all, one line per step: the test that proves
  /// none of them reads the completed history reads it.
  [[nodiscard]] std::vector<std::string> explain_stats() { return s_->explain_stats(); }

 private:
  struct state;
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

  struct state {
    sqlite3* db;
    bool owned;
    std::string path;
    sqlite_options options;
    std::mutex db_mutex;  // one user of the connection at a time
    // A transaction_guard's transaction belongs to the thread that opened it: that thread's
    // writes join it, every other thread's reads and writes wait until it ends.
    std::condition_variable txn_cv;
    std::thread::id txn_owner{};

    /// Locks the connection once no other thread's application transaction is open on it.
    std::unique_lock<std::mutex> lock_connection() {
      std::unique_lock lock(db_mutex);
      const auto self = std::this_thread::get_id();
      txn_cv.wait(lock, [&] { return txn_owner == std::thread::id() || txn_owner == self; });
      return lock;
    }

    /// The status changes of one write, per (user, status). A write usually touches one user and
    /// two or three statuses, so a short list beats a map.
    struct status_tally {
      struct entry {
        std::string user;
        int status;
        std::int64_t delta;
      };
      std::vector<entry> deltas;
      void add(std::string_view user, status st, std::int64_t n) {
        const int code = static_cast<int>(st);
        for (auto& d : deltas) {
          if (d.status == code && d.user == user) {
            d.delta += n;
            return;
          }
        }
        deltas.push_back({std::string(user), code, n});
      }
      void move(std::string_view user, status from, status to) {
        add(user, from, -1);
        add(user, to, 1);
      }
    };

    /// How many events each user has in the statuses an event leaves (pending, processing,
    /// failed, dead), as committed. Counting them costs what is waiting (19 ms for 100k events),
    /// so stats() counts them once and this connection's commits keep the counts: each write
    /// tallies its status changes, and the group that commits it adds them here (a memory write;
    /// a table of counts would add a page to every commit's WAL, 10 % of a lone save). The
    /// counts go stale, and stats() counts again, when another connection commits (PRAGMA
    /// data_version) or a write joins an application's transaction, whose end is the
    /// application's. Completed events are counted in outbox_completed instead: they are the
    /// history, too many to count again.
    struct waiting_counts {
      bool valid = false;
      std::int64_t data_version = 0;
      std::map<std::string, std::array<std::int64_t, status_count>, std::less<>> by_user;
      void apply(const status_tally& tally) {
        for (const auto& d : tally.deltas) {
          if (d.status == static_cast<int>(status::completed)) continue;
          by_user[d.user][static_cast<std::size_t>(d.status)] += d.delta;
        }
      }
    };
    waiting_counts waiting;
    status_tally* tally_target = nullptr;  // the running group member's tally; null outside a group

    // Group commit: callers queue their work; one of them leads a transaction for all queued.
    struct write_item {
      std::function<result<void>()> work;  // may run twice (see run_group_locked): must overwrite its outputs
      result<void> outcome;
      bool done = false;
      status_tally changes;  // what `work` changed, applied to `waiting` once committed
    };
    std::mutex queue_mutex;
    std::condition_variable queue_cv;
    std::vector<write_item*> queue;
    bool leading = false;
    std::atomic<bool> group_open{false};      // a leader's transaction is open on the connection
    /// Sets `group_open` for its lifetime, whatever way the group's run ends.
    struct group_marker {
      std::atomic<bool>& flag;
      explicit group_marker(std::atomic<bool>& f) : flag(f) { flag.store(true, std::memory_order_release); }
      ~group_marker() { flag.store(false, std::memory_order_release); }
      group_marker(const group_marker&) = delete;
      group_marker& operator=(const group_marker&) = delete;
    };
    std::condition_variable arrivals_cv;      // a gathering leader waits here for writers
    bool gathering = false;
    std::size_t expected_group = 0;           // writers the next leader waits for
    std::chrono::steady_clock::duration last_commit{};
    std::atomic<std::uint64_t> commits{0};
    std::atomic<std::uint64_t> writes{0};

    std::uint64_t next_lease = 0;

    // Prepared statements, reused for the connection's life.
    detail::sqlite::statement begin, commit_tx, rollback_tx, savepoint, release, rollback_to;
    detail::sqlite::statement insert_event_stmt, insert_key_if_absent, line_head, key_state, upsert_key,
        delete_key, expired_leases, expire_one, promote_due, ready_heads, claim_one, block_key, record_one,
        find_event, find_seq, write_back_completed, write_back_dead, next_retry, next_lease_end, reset_one,
        dead_of_user, dead_all, purge, late_retries, clamp_retry, clamp_leases, find_entity_stmt, find_by_key_stmt,
        entity_version, natural_key_owner, upsert_entity, delete_entity, replace_event, drop_event, add_completed,
        purge_counts, created_at_of, count_waiting, oldest_pending_of, oldest_due_of, data_version;
    /// A stats() query prepared twice: for one user and for all.
    struct per_user_statement {
      detail::sqlite::statement user, all;
      detail::sqlite::statement& operator()(bool for_user) { return for_user ? user : all; }
    };
    per_user_statement stats_completed;

    state(sqlite3* connection, bool owns, std::string file, sqlite_options o)
        : db(connection), owned(owns), path(std::move(file)), options(o) {
      std::random_device rd;
      // Lease tokens: a fresh random start per open, so no token repeats across restarts.
      next_lease = (static_cast<std::uint64_t>(rd()) << 32 | rd()) & 0x3FFF'FFFF'FFFF'FFFFULL;
    }
    state(const state&) = delete;
    state& operator=(const state&) = delete;
    ~state() {
      // Statements must be finalised before the connection closes.
      for (auto* s : all_statements()) *s = detail::sqlite::statement();
      if (owned) sqlite3_close_v2(db);
    }

    std::vector<detail::sqlite::statement*> all_statements() {
      return {&begin, &commit_tx, &rollback_tx, &savepoint, &release, &rollback_to, &insert_event_stmt,
              &insert_key_if_absent, &line_head, &key_state, &upsert_key, &delete_key, &expired_leases,
              &expire_one, &promote_due, &ready_heads, &claim_one, &block_key, &record_one, &find_event, &find_seq,
              &write_back_completed, &write_back_dead, &next_retry, &next_lease_end, &reset_one, &dead_of_user,
              &dead_all, &purge, &late_retries, &clamp_retry, &clamp_leases, &find_entity_stmt, &find_by_key_stmt,
              &entity_version, &natural_key_owner, &upsert_entity, &delete_entity, &replace_event, &drop_event,
              &add_completed, &purge_counts, &created_at_of, &count_waiting, &oldest_pending_of, &data_version,
              &stats_completed.user, &stats_completed.all, &oldest_due_of};
    }

    result<void> exec(std::string_view sql, std::string_view what) {
      char* message = nullptr;
      const int rc = sqlite3_exec(db, std::string(sql).c_str(), nullptr, nullptr, &message);
      if (rc == SQLITE_OK) return {};
      std::string text = std::string(what) + ": " + (message ? message : sqlite3_errstr(rc));
      sqlite3_free(message);
      return outbox::error(detail::sqlite::code_of(rc), path.empty() ? text : path + ": " + text);
    }

    result<std::int64_t> scalar(std::string_view sql, std::string_view what) {
      detail::sqlite::statement s(db, sql);
      if (s.prepare_error()) return *s.prepare_error();
      const int rc = s.step();
      if (rc == SQLITE_ROW) return s.int64(0);
      if (rc == SQLITE_DONE) return std::int64_t{0};
      return detail::sqlite::failure(db, rc, what);
    }

    result<void> initialise() {
      auto lock = lock_connection();
      sqlite3_busy_timeout(db, static_cast<int>(options.busy_timeout.count()));
      sqlite3_extended_result_codes(db, 1);
      if (owned) {
        auto mode = exec("PRAGMA journal_mode=WAL", "enabling WAL");
        if (!mode) return mode;
        const char* sync = options.synchronous == sqlite_options::sync_mode::full     ? "PRAGMA synchronous=FULL"
                           : options.synchronous == sqlite_options::sync_mode::normal ? "PRAGMA synchronous=NORMAL"
                                                                                      : "PRAGMA synchronous=OFF";
        if (auto done = exec(sync, "setting synchronous"); !done) return done;
      }
      // Refuse a newer schema before touching anything.
      auto has_meta = scalar("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='outbox_meta'",
                             "reading the schema");
      if (!has_meta) return has_meta.error();
      std::optional<std::int64_t> stored_version;
      if (*has_meta) {
        auto version = scalar("SELECT CAST(value AS INTEGER) FROM outbox_meta WHERE key='schema_version'",
                              "reading the schema version");
        if (!version) return version.error();
        if (*version > detail::sqlite::schema_version)
          return outbox::error(errc::schema_too_new,
                               (path.empty() ? std::string("database") : path) + " has outbox schema version " +
                                   std::to_string(*version) + ", this library understands up to " +
                                   std::to_string(detail::sqlite::schema_version) + "; it was left unchanged");
        stored_version = *version;
      }
      if (owned) {
        auto user_version = scalar("PRAGMA user_version", "reading user_version");
        if (!user_version) return user_version.error();
        if (*user_version > detail::sqlite::schema_version)
          return outbox::error(errc::schema_too_new, path + " has user_version " + std::to_string(*user_version) +
                                                         "; it was left unchanged");
      }
      const bool in_app_transaction = sqlite3_get_autocommit(db) == 0;
      if (!in_app_transaction) {
        if (auto b = exec("BEGIN IMMEDIATE", "starting the schema migration"); !b) return b;
      }
      result<void> migrated;
      if (stored_version && *stored_version < 2) {
        // Schema 1's line index was partial on status; schema_sql creates the full one.
        migrated = exec("DROP INDEX IF EXISTS outbox_events_line", "migrating the line index to schema 2");
      }
      const bool before_3 = stored_version && *stored_version < 3;
      if (migrated && before_3) {
        // Schema 2's status index led with user_id; schema_sql creates the one led by status.
        migrated = exec("DROP INDEX IF EXISTS outbox_events_by_status", "migrating the status index to schema 3");
      }
      if (migrated && stored_version && *stored_version < 4) {
        // Schema 3's line indexes were full; schema_sql creates the partial ones.
        migrated = exec("DROP INDEX IF EXISTS outbox_keys_claim; DROP INDEX IF EXISTS outbox_keys_due",
                        "migrating the line indexes to schema 4");
      }
      if (migrated) migrated = exec(detail::sqlite::schema_sql, "creating the outbox schema");
      if (migrated && before_3) {
        // Schema 3 counts completed events as they complete; the ones before it, once here.
        migrated = exec("DELETE FROM outbox_completed; INSERT INTO outbox_completed(user_id, n) "
                        "SELECT user_id, count(*) FROM outbox_events WHERE status = 2 GROUP BY user_id",
                        "counting completed events for schema 3");
      }
      if (migrated) {
        migrated = exec("INSERT INTO outbox_meta(key, value) VALUES('schema_version', '" +
                            std::to_string(detail::sqlite::schema_version) +
                            "') ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        "recording the schema version");
      }
      if (migrated && owned) {
        migrated = exec("PRAGMA user_version = " + std::to_string(detail::sqlite::schema_version),
                        "setting user_version");
      }
      if (!in_app_transaction) {
        if (!migrated) {
          (void)exec("ROLLBACK", "rolling back the migration");
          return migrated;
        }
        if (auto c = exec("COMMIT", "committing the schema"); !c) return c;
      } else if (!migrated) {
        return migrated;
      }
      return prepare_all();
    }

    result<void> prepare_all() {
      using detail::sqlite::statement;
      const std::string cols(detail::sqlite::event_columns);
      const std::string ecols(detail::sqlite::entity_columns);
      begin = statement(db, "BEGIN IMMEDIATE");
      commit_tx = statement(db, "COMMIT");
      rollback_tx = statement(db, "ROLLBACK");
      savepoint = statement(db, "SAVEPOINT outbox_write");
      release = statement(db, "RELEASE outbox_write");
      rollback_to = statement(db, "ROLLBACK TO outbox_write");
      insert_event_stmt = statement(
          db, "INSERT INTO outbox_events(id, type, entity_id, entity_type, ordering_key, user_id, payload, priority, "
              "status, attempts, max_attempts, created_at, updated_at, retry_after, completed_at, last_error, "
              "remote_id, lease, lease_until) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, 0, ?9, ?10, ?11, 0, 0, ?12, "
              "'', 0, 0)");
      insert_key_if_absent = statement(db,
                                       "INSERT INTO outbox_keys(user_id, ordering_key, state, priority, head_seq, "
                                       "ready_at) VALUES(?1, ?2, 0, ?3, ?4, 0) ON CONFLICT DO NOTHING");
      line_head = statement(db, detail::sqlite::line_head_sql);
      key_state = statement(db, "SELECT state, head_seq FROM outbox_keys WHERE user_id = ?1 AND ordering_key = ?2");
      upsert_key = statement(db,
                             "INSERT INTO outbox_keys(user_id, ordering_key, state, priority, head_seq, ready_at) "
                             "VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(user_id, ordering_key) DO UPDATE SET "
                             "state = excluded.state, priority = excluded.priority, head_seq = excluded.head_seq, "
                             "ready_at = excluded.ready_at");
      delete_key = statement(db, "DELETE FROM outbox_keys WHERE user_id = ?1 AND ordering_key = ?2");
      expired_leases = statement(db, detail::sqlite::expired_leases_sql);
      expire_one = statement(db,
                             "UPDATE outbox_events SET status = ?2, lease = 0, lease_until = 0, updated_at = ?3, "
                             "last_error = ?4 WHERE seq = ?1");
      promote_due = statement(db, detail::sqlite::promote_due_sql);
      ready_heads = statement(db, detail::sqlite::ready_heads_sql);
      claim_one = statement(db,
                            "UPDATE outbox_events SET status = 1, attempts = attempts + 1, lease = ?2, "
                            "lease_until = ?3, updated_at = ?4 WHERE seq = ?1 RETURNING " + cols);
      block_key = statement(db, "UPDATE outbox_keys SET state = 2 WHERE user_id = ?1 AND ordering_key = ?2");
      record_one = statement(
          db, "UPDATE outbox_events SET status = ?3, attempts = ?4, updated_at = ?5, "
              "retry_after = CASE WHEN ?3 = 3 THEN ?6 ELSE retry_after END, "
              "completed_at = CASE WHEN ?3 = 2 THEN ?5 ELSE completed_at END, "
              "last_error = CASE WHEN ?7 <> '' THEN ?7 ELSE last_error END, "
              "remote_id = CASE WHEN ?3 = 2 THEN ?8 ELSE remote_id END, lease = 0, lease_until = 0 "
              "WHERE id = ?1 AND status = 1 AND lease = ?2 "
              "RETURNING seq, user_id, ordering_key, entity_type, entity_id, last_error");
      find_event = statement(db, "SELECT " + cols + " FROM outbox_events WHERE id = ?1");
      find_seq = statement(db, "SELECT seq, status, attempts, user_id, ordering_key FROM outbox_events WHERE id = ?1");
      write_back_completed = statement(
          db, "UPDATE outbox_entities SET remote_id = CASE WHEN ?3 <> '' THEN ?3 ELSE remote_id END, "
              "sync = CASE WHEN last_event = ?4 THEN 1 ELSE sync END, "
              "sync_error = CASE WHEN last_event = ?4 THEN '' ELSE sync_error END, version = version + 1 "
              "WHERE collection = ?1 AND id = ?2");
      write_back_dead = statement(db,
                                  "UPDATE outbox_entities SET sync_error = ?3, version = version + 1 "
                                  "WHERE collection = ?1 AND id = ?2");
      next_retry = statement(db,
                             "SELECT min(ready_at) FROM outbox_keys WHERE user_id = ?1 AND state = 1");
      next_lease_end = statement(db,
                                 "SELECT min(lease_until) FROM outbox_events INDEXED BY outbox_events_leases "
                                 "WHERE status = 1");
      reset_one = statement(db,
                            "UPDATE outbox_events SET status = 0, attempts = 0, retry_after = 0, updated_at = ?2 "
                            "WHERE id = ?1 AND status IN (3, 4) RETURNING user_id, ordering_key, seq");
      dead_of_user = statement(db, "SELECT id FROM outbox_events WHERE user_id = ?1 AND status = 4");
      dead_all = statement(db, "SELECT id FROM outbox_events WHERE status = 4");
      purge = statement(db, "DELETE FROM outbox_events WHERE status = 2 AND completed_at < ?1");
      purge_counts = statement(db,
                               "SELECT user_id, count(*) FROM outbox_events WHERE status = 2 AND completed_at < ?1 "
                               "GROUP BY user_id");
      late_retries = statement(db,
                               "SELECT seq, user_id, ordering_key FROM outbox_events WHERE status = 3 AND retry_after > ?1");
      clamp_retry = statement(db, "UPDATE outbox_events SET retry_after = ?2 WHERE seq = ?1");
      clamp_leases = statement(db,
                               "UPDATE outbox_events INDEXED BY outbox_events_leases SET lease_until = ?1 "
                               "WHERE status = 1 AND lease_until > ?1");
      find_entity_stmt = statement(db, "SELECT " + ecols + " FROM outbox_entities WHERE collection = ?1 AND id = ?2");
      find_by_key_stmt = statement(db,
                                   "SELECT " + ecols + " FROM outbox_entities WHERE collection = ?1 AND user_id = ?2 "
                                   "AND natural_key = ?3");
      entity_version = statement(db, "SELECT version FROM outbox_entities WHERE collection = ?1 AND id = ?2");
      natural_key_owner = statement(db,
                                    "SELECT id FROM outbox_entities WHERE collection = ?1 AND user_id = ?2 AND "
                                    "natural_key = ?3");
      upsert_entity = statement(
          db, "INSERT INTO outbox_entities(" + ecols +
                  ") VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) ON CONFLICT(collection, id) DO "
                  "UPDATE SET user_id = excluded.user_id, natural_key = excluded.natural_key, payload = "
                  "excluded.payload, occurred_at = excluded.occurred_at, sync = excluded.sync, remote_id = "
                  "excluded.remote_id, sync_error = excluded.sync_error, last_event = excluded.last_event, version = "
                  "excluded.version, updated_at = excluded.updated_at");
      delete_entity = statement(db, "DELETE FROM outbox_entities WHERE collection = ?1 AND id = ?2");
      replace_event = statement(db, "UPDATE outbox_events SET type = ?2, payload = ?3, updated_at = ?4 WHERE seq = ?1");
      drop_event = statement(db, "DELETE FROM outbox_events WHERE seq = ?1");
      created_at_of = statement(db, "SELECT created_at FROM outbox_events WHERE seq = ?1");
      count_waiting = statement(db, detail::sqlite::count_waiting_sql);
      oldest_pending_of = statement(db, detail::sqlite::oldest_pending_sql);
      data_version = statement(db, "PRAGMA data_version");
      oldest_due_of = statement(db, detail::sqlite::oldest_due_sql);
      stats_completed.user = statement(db, detail::sqlite::count_completed.user);
      stats_completed.all = statement(db, detail::sqlite::count_completed.all);
      add_completed = statement(db,
                                "INSERT INTO outbox_completed(user_id, n) VALUES(?1, ?2) "
                                "ON CONFLICT(user_id) DO UPDATE SET n = n + excluded.n");
      for (auto* s : all_statements()) {
        if (s->prepare_error()) return *s->prepare_error();
      }
      return {};
    }

    // ---- the write path: group commit ----------------------------------------------------------

    static result<void> step_done(detail::sqlite::statement& s, sqlite3* db, std::string_view what) {
      detail::sqlite::reset_on_exit reset{s};
      const int rc = s.step();
      if (rc == SQLITE_DONE || rc == SQLITE_ROW) return {};
      return detail::sqlite::failure(db, rc, what);
    }

    /// Runs `work` in a transaction and returns once that transaction is durable (or failed).
    template <class F>
    result<void> write(F&& work) {
      writes.fetch_add(1, std::memory_order_relaxed);
      // While a group's transaction is open the connection can hold no other, so there is none
      // to join: go straight to the queue. (Checking would wait out that whole commit, sync
      // included, on the connection's lock; writers released by the last commit then queued
      // only after the next leader had taken the queue, and groups split in two.)
      if (!group_open.load(std::memory_order_acquire)) {
        auto lock = lock_connection();
        if (sqlite3_get_autocommit(db) == 0) {
          // Inside this thread's transaction_guard, or the application's own transaction on an
          // adopted connection: join it; it commits or rolls back with the application's rows,
          // and the kept counts cannot follow it.
          waiting.valid = false;
          return in_savepoint(work);
        }
      }
      write_item item{std::function<result<void>()>(std::ref(work)), {}, false, {}};
      if (!options.group_commit) {
        auto lock = lock_connection();
        const group_marker open{group_open};
        run_group_locked({&item});
        return item.outcome;
      }
      std::unique_lock lock(queue_mutex);
      queue.push_back(&item);
      if (gathering) arrivals_cv.notify_one();
      while (!item.done) {
        if (!leading) {
          leading = true;
          gather(lock);
          std::vector<write_item*> group;
          group.swap(queue);
          lock.unlock();
          const auto started = std::chrono::steady_clock::now();
          {
            auto db_lock = lock_connection();
            const group_marker open{group_open};
            run_group_locked(group);
          }
          const auto took = std::chrono::steady_clock::now() - started;
          lock.lock();
          for (auto* member : group) member->done = true;
          // The members just released will be back with their next call, as will those that
          // queued during this commit: the next leader waits for that many.
          expected_group = group.size() + queue.size();
          last_commit = took;
          leading = false;
          queue_cv.notify_all();
        } else {
          queue_cv.wait(lock);
        }
      }
      return item.outcome;
    }

    /// Before taking the queue, a new leader waits briefly for the writers the last commit
    /// released. Without this, a leader swaps the queue out the instant the previous commit ends,
    /// before those writers are back; they then form the group after, and commits settle into
    /// two alternating halves of the writers, each waiting for two syncs per call. The wait is
    /// bounded by half the last commit's duration (200 µs at most), so it costs at most half a
    /// sync, and a lone writer (expected group of 1) never waits.
    void gather(std::unique_lock<std::mutex>& lock) {
      if (expected_group <= 1 || queue.size() >= expected_group) return;
      const auto budget = std::min<std::chrono::steady_clock::duration>(last_commit / 2, std::chrono::microseconds(200));
      gathering = true;
      arrivals_cv.wait_until(lock, std::chrono::steady_clock::now() + budget,
                             [&] { return queue.size() >= expected_group; });
      gathering = false;
    }

    template <class F>
    result<void> in_savepoint(F& work) {
      if (auto s = step_done(savepoint, db, "SAVEPOINT"); !s) return s;
      result<void> done;
      try {
        done = work();
      } catch (...) {
        done = error(errc::storage_failure, "exception inside a storage write");
      }
      if (!done) {
        (void)step_done(rollback_to, db, "ROLLBACK TO");
      }
      (void)step_done(release, db, "RELEASE");
      return done;
    }

    /// One transaction for the group; gives every member its own outcome, or the commit's
    /// failure. Marking members done is the caller's job, under the queue's mutex, which is
    /// what their threads read `done` under.
    void run_group_locked(const std::vector<write_item*>& group) {
      auto finish = [&](const result<void>& outcome) {
        for (auto* item : group) {
          if (item->outcome) item->outcome = outcome;
        }
      };
      if (auto b = step_done(begin, db, "BEGIN IMMEDIATE"); !b) {
        for (auto* item : group) item->outcome = b;
        finish(b);
        return;
      }
      // First pass: every member straight into the transaction, without savepoints. A savepoint
      // makes SQLite copy each page a member changes into a statement sub-journal (spilled to a
      // temporary file past 64 KiB, an open, write and unlink per call), which is pure cost when
      // nobody fails. If a member fails, the transaction is rolled back and the group runs again
      // with a savepoint per member, so the failure undoes only its own work. (Alone in its
      // group, a member needs no second pass: the rollback undoes exactly its work.) Every
      // write's work may therefore run twice; each one overwrites its outputs, never appends.
      auto run_bare = [this](write_item* item) {
        item->changes.deltas.clear();
        tally_target = &item->changes;
        try {
          item->outcome = item->work();
        } catch (...) {
          item->outcome = error(errc::storage_failure, "exception inside a storage write");
        }
        tally_target = nullptr;
        return item->outcome.has_value();
      };
      bool all = true;
      for (auto* item : group) {
        if (!run_bare(item)) {
          all = false;
          break;
        }
      }
      bool any = all;
      if (!all && group.size() > 1) {
        (void)step_done(rollback_tx, db, "ROLLBACK");
        if (auto b = step_done(begin, db, "BEGIN IMMEDIATE"); !b) {
          for (auto* item : group) item->outcome = b;
          finish(b);
          return;
        }
        for (auto* item : group) {
          item->changes.deltas.clear();
          tally_target = &item->changes;
          item->outcome = in_savepoint(item->work);
          tally_target = nullptr;
          any = any || item->outcome.has_value();
        }
      }
      result<void> committed;
      if (any) {
        committed = step_done(commit_tx, db, "COMMIT");
        if (!committed) {
          (void)step_done(rollback_tx, db, "ROLLBACK");
        } else {
          commits.fetch_add(1, std::memory_order_relaxed);
          try {
            if (waiting.valid)
              for (auto* item : group)
                if (item->outcome) waiting.apply(item->changes);
          } catch (...) {  // out of memory: the next stats() counts again
            waiting.valid = false;
          }
        }
      } else {
        (void)step_done(rollback_tx, db, "ROLLBACK");
      }
      finish(committed);
    }

    // ---- events ----------------------------------------------------------------------------

    result<void> insert_event(event& e, status_tally& tally) {
      if (e.id.is_nil()) return error(errc::invalid_argument, "event id must not be nil");
      if (e.status != status::pending)
        return error(errc::invalid_argument, "a new event must be pending, got " + std::string(to_string(e.status)));
      {
        auto& s = insert_event_stmt;
        detail::sqlite::reset_on_exit reset{s};
        s.bind(1, e.id).bind(2, e.type).bind(3, e.entity_id).bind(4, e.entity_type).bind(5, e.ordering_key);
        s.bind(6, e.user_id).bind_blob(7, e.payload).bind(8, e.priority).bind(9, e.max_attempts);
        s.bind(10, e.created_at).bind(11, e.updated_at).bind(12, e.last_error);
        const int rc = s.step();
        if ((rc & 0xFF) == SQLITE_CONSTRAINT)
          return error(errc::invalid_argument, "duplicate event id " + e.id.to_string());
        if (rc != SQLITE_DONE) return detail::sqlite::failure(db, rc, "appending an event");
      }
      e.seq = static_cast<std::uint64_t>(sqlite3_last_insert_rowid(db));
      e.lease = 0;
      // A key with no line yet gets one headed by this event; behind an existing head nothing moves.
      auto& k = insert_key_if_absent;
      k.bind(1, e.user_id).bind(2, e.ordering_key).bind(3, e.priority).bind(4, e.seq);
      if (auto queued = step_done(k, db, "queueing an ordering key"); !queued) return queued;
      tally.add(e.user_id, status::pending, 1);
      return {};
    }

    /// Why a line is re-derived: its in-flight event left processing, or anything else.
    enum class line_event { flight_ended, other };

    /// Re-derives a line's head after a change to the line's event `changed`.
    ///
    /// The head is the line's undelivered event with the lowest seq. Every undelivered event is
    /// at or after the head the line row records, or is `changed` itself (a reset dead event
    /// rejoining), so the search starts at the lower of the two: it skips no undelivered event and
    /// walks over no delivered one before the old head. In a drain it reads two index entries.
    ///
    /// A line has at most one event in flight: claims take only heads of lines in state 0, and
    /// the claim moves the line to state 2 until that event's outcome is recorded or its lease
    /// expires. So after an outcome or an expiry (`flight_ended`) nothing of the line is in
    /// flight; after any other change (a reset dead event rejoining ahead of an in-flight one, a
    /// dropped or re-bounded event) the line row's own state still says it. (A query over the
    /// line's events for a processing one was planned on the per-user status index and made every
    /// recorded outcome visit every pending event of the user.)
    result<void> refresh(std::string_view user, std::string_view key, std::int64_t changed,
                         line_event why = line_event::other) {
      bool in_flight = false;
      std::int64_t floor = changed;
      {
        auto& s = key_state;
        detail::sqlite::reset_on_exit reset{s};
        s.bind(1, user).bind(2, key);
        const int rc = s.step();
        if (rc == SQLITE_ROW) {
          in_flight = why == line_event::other && s.integer(0) == 2;
          floor = std::min(floor, s.int64(1));
        } else if (rc != SQLITE_DONE) {
          return detail::sqlite::failure(db, rc, "reading a line");
        }
      }
      std::optional<std::int64_t> head_seq;
      int head_status = 0, head_priority = 0;
      std::int64_t head_retry = 0;
      {
        auto& s = line_head;
        detail::sqlite::reset_on_exit reset{s};
        s.bind(1, user).bind(2, key).bind(3, floor);
        const int rc = s.step();
        if (rc == SQLITE_ROW) {
          head_seq = s.int64(0);
          head_status = s.integer(1);
          head_priority = s.integer(2);
          head_retry = s.int64(3);
        } else if (rc != SQLITE_DONE) {
          return detail::sqlite::failure(db, rc, "reading a line head");
        }
      }
      if (!head_seq) {
        delete_key.bind(1, user).bind(2, key);
        return step_done(delete_key, db, "dropping an empty line");
      }
      const int state_value = in_flight ? 2 : head_status == static_cast<int>(status::failed) ? 1 : 0;
      auto& u = upsert_key;
      u.bind(1, user).bind(2, key).bind(3, state_value).bind(4, head_priority).bind(5, *head_seq);
      u.bind(6, state_value == 1 ? head_retry : std::int64_t{0});
      return step_done(u, db, "updating a line");
    }

    result<void> write_back(std::string_view entity_type, std::string_view entity_id, status to,
                            std::string_view remote_id, const event_id& id, std::string_view error_text) {
      if (entity_type.empty()) return {};
      if (to == status::completed) {
        auto& s = write_back_completed;
        s.bind(1, entity_type).bind(2, entity_id).bind(3, remote_id).bind(4, id);
        return step_done(s, db, "writing a delivery back onto its entity");
      }
      if (to == status::dead) {
        auto& s = write_back_dead;
        s.bind(1, entity_type).bind(2, entity_id).bind(3, error_text);
        return step_done(s, db, "writing a rejection back onto its entity");
      }
      return {};
    }

    result<void> expire(timestamp now, status_tally& tally) {
      struct expired {
        std::int64_t seq;
        int attempts, max_attempts;
        std::string user, key, entity_type, entity_id;
      };
      std::vector<expired> list;
      {
        auto& s = expired_leases;
        detail::sqlite::reset_on_exit reset{s};
        s.bind(1, now);
        int rc;
        while ((rc = s.step()) == SQLITE_ROW)
          list.push_back({s.int64(0), s.integer(1), s.integer(2), s.text(3), s.text(4), s.text(5), s.text(6)});
        if (rc != SQLITE_DONE) return detail::sqlite::failure(db, rc, "reading expired leases");
      }
      for (const auto& x : list) {
        const bool last = x.attempts >= x.max_attempts;
        const std::string why = last ? "lease expired during the last attempt" : "lease expired";
        expire_one.bind(1, x.seq).bind(2, static_cast<int>(last ? status::dead : status::pending)).bind(3, now).bind(4, why);
        if (auto d = step_done(expire_one, db, "expiring a lease"); !d) return d;
        if (auto r = refresh(x.user, x.key, x.seq, line_event::flight_ended); !r) return r;
        tally.move(x.user, status::processing, last ? status::dead : status::pending);
        if (last) {
          if (auto w = write_back(x.entity_type, x.entity_id, status::dead, {}, {}, why); !w) return w;
        }
      }
      return {};
    }

    result<std::size_t> claim(const claim_request& request, std::vector<event>& out) {
      if (request.limit == 0) return std::size_t{0};
      status_tally tally;
      if (auto x = expire(request.now, tally); !x) return x.error();
      promote_due.bind(1, request.user_id).bind(2, request.now);
      if (auto p = step_done(promote_due, db, "promoting due retries"); !p) return p.error();
      std::vector<std::pair<std::int64_t, status>> heads;  // seq, and pending or failed
      {
        auto& s = ready_heads;
        detail::sqlite::reset_on_exit reset{s};
        s.bind(1, request.user_id).bind(2, static_cast<std::int64_t>(request.limit));
        int rc;
        while ((rc = s.step()) == SQLITE_ROW) heads.emplace_back(s.int64(0), static_cast<status>(s.integer(1)));
        if (rc != SQLITE_DONE) return detail::sqlite::failure(db, rc, "reading ready heads");
      }
      for (auto [seq, was] : heads) {
        {
          auto& s = claim_one;
          detail::sqlite::reset_on_exit reset{s};
          s.bind(1, seq).bind(2, next_lease++).bind(3, request.lease_until).bind(4, request.now);
          const int rc = s.step();
          if (rc != SQLITE_ROW) return detail::sqlite::failure(db, rc, "claiming an event");
          out.push_back(detail::sqlite::read_event(s));
        }
        block_key.bind(1, out.back().user_id).bind(2, out.back().ordering_key);
        if (auto b = step_done(block_key, db, "marking a line in flight"); !b) return b.error();
        tally.move(request.user_id, was, status::processing);
      }
      if (auto c = apply_counts(tally); !c) return c.error();
      return heads.size();
    }

    /// Ends a write's counting: its completed events counted in outbox_completed, in its
    /// transaction; all of its status changes handed to the group member it runs for, whose
    /// commit applies them to `waiting`.
    result<void> apply_counts(const status_tally& tally) {
      for (const auto& d : tally.deltas) {
        if (d.status != static_cast<int>(status::completed) || d.delta == 0) continue;
        add_completed.bind(1, std::string_view(d.user)).bind(2, d.delta);
        if (auto done = step_done(add_completed, db, "counting completed events"); !done) return done;
      }
      if (tally_target)
        for (const auto& d : tally.deltas) tally_target->add(d.user, static_cast<status>(d.status), d.delta);
      return {};
    }

    result<std::size_t> record(std::span<outcome> outcomes) {
      for (const outcome& o : outcomes) {
        if (o.to == status::processing)
          return error(errc::invalid_argument, "an outcome cannot move an event to processing");
      }
      std::size_t applied = 0;
      status_tally tally;
      for (outcome& o : outcomes) {
        o.applied = false;
        std::string user, key, entity_type, entity_id, last_error;
        std::int64_t seq = 0;
        {
          auto& s = record_one;
          detail::sqlite::reset_on_exit reset{s};
          s.bind(1, o.id).bind(2, o.lease).bind(3, static_cast<int>(o.to)).bind(4, o.attempts).bind(5, o.at);
          s.bind(6, o.retry_after).bind(7, o.error).bind(8, o.remote_id);
          const int rc = s.step();
          if (rc == SQLITE_DONE) continue;  // stale: the lease is gone
          if (rc != SQLITE_ROW) return detail::sqlite::failure(db, rc, "recording an outcome");
          seq = s.int64(0);
          user = s.text(1);
          key = s.text(2);
          entity_type = s.text(3);
          entity_id = s.text(4);
          last_error = s.text(5);
        }
        if (auto r = refresh(user, key, seq, line_event::flight_ended); !r) return r.error();
        if (auto w = write_back(entity_type, entity_id, o.to, o.remote_id, o.id, last_error); !w) return w.error();
        tally.move(user, status::processing, o.to);
        o.applied = true;
        ++applied;
      }
      if (auto c = apply_counts(tally); !c) return c.error();
      return applied;
    }

    result<std::size_t> reset(std::span<const event_id> ids, timestamp now) {
      std::size_t count = 0;
      status_tally tally;
      for (const auto& id : ids) {
        std::string user, key;
        std::int64_t seq = 0;
        status was = status::failed;  // what the event leaves: failed or dead
        {
          auto& s = find_seq;
          detail::sqlite::reset_on_exit reset_guard{s};
          s.bind(1, id);
          const int rc = s.step();
          if (rc == SQLITE_DONE) continue;
          if (rc != SQLITE_ROW) return detail::sqlite::failure(db, rc, "reading an event to reset");
          was = static_cast<status>(s.integer(1));
        }
        {
          auto& s = reset_one;
          detail::sqlite::reset_on_exit reset_guard{s};
          s.bind(1, id).bind(2, now);
          const int rc = s.step();
          if (rc == SQLITE_DONE) continue;
          if (rc != SQLITE_ROW) return detail::sqlite::failure(db, rc, "resetting an event");
          user = s.text(0);
          key = s.text(1);
          seq = s.int64(2);
        }
        if (auto r = refresh(user, key, seq); !r) return r.error();
        tally.move(user, was, status::pending);
        ++count;
      }
      if (auto c = apply_counts(tally); !c) return c.error();
      return count;
    }

    result<std::size_t> reset_dead(std::optional<std::string_view> user, timestamp now) {
      std::vector<event_id> ids;
      {
        auto& s = user ? dead_of_user : dead_all;
        detail::sqlite::reset_on_exit reset_guard{s};
        if (user) s.bind(1, *user);
        int rc;
        while ((rc = s.step()) == SQLITE_ROW) ids.push_back(s.id(0));
        if (rc != SQLITE_DONE) return detail::sqlite::failure(db, rc, "listing dead events");
      }
      return reset(ids, now);
    }

    result<std::size_t> purge_completed(timestamp before) {
      // Counted per user first (the deletion's own range, through the status index), so the
      // completed counts drop by what the deletion removes; RETURNING would buffer every row.
      status_tally tally;
      {
        detail::sqlite::reset_on_exit reset{purge_counts};
        purge_counts.bind(1, before);
        int rc;
        while ((rc = purge_counts.step()) == SQLITE_ROW)
          tally.add(purge_counts.text(0), status::completed, -purge_counts.int64(1));
        if (rc != SQLITE_DONE) return detail::sqlite::failure(db, rc, "counting completed events to purge");
      }
      purge.bind(1, before);
      if (auto d = step_done(purge, db, "purging completed events"); !d) return d.error();
      const auto purged = static_cast<std::size_t>(sqlite3_changes(db));
      if (auto c = apply_counts(tally); !c) return c.error();
      return purged;
    }

    result<std::size_t> clamp_schedule(timestamp retry_limit, timestamp lease_limit) {
      struct late {
        std::int64_t seq;
        std::string user, key;
      };
      std::vector<late> list;
      {
        auto& s = late_retries;
        detail::sqlite::reset_on_exit reset_guard{s};
        s.bind(1, retry_limit);
        int rc;
        while ((rc = s.step()) == SQLITE_ROW) list.push_back({s.int64(0), s.text(1), s.text(2)});
        if (rc != SQLITE_DONE) return detail::sqlite::failure(db, rc, "finding late retries");
      }
      for (const auto& x : list) {
        clamp_retry.bind(1, x.seq).bind(2, retry_limit);
        if (auto d = step_done(clamp_retry, db, "re-bounding a retry"); !d) return d.error();
        if (auto r = refresh(x.user, x.key, x.seq); !r) return r.error();
      }
      clamp_leases.bind(1, lease_limit);
      if (auto d = step_done(clamp_leases, db, "re-bounding leases"); !d) return d.error();
      return list.size() + static_cast<std::size_t>(sqlite3_changes(db));
    }

    // ---- entities ----------------------------------------------------------------------------

    result<void> commit(const entity_change& c) {
      std::uint64_t current = 0;
      {
        auto& s = entity_version;
        detail::sqlite::reset_on_exit reset_guard{s};
        s.bind(1, c.entity.collection).bind(2, c.entity.id);
        const int rc = s.step();
        if (rc == SQLITE_ROW) current = static_cast<std::uint64_t>(s.int64(0));
        else if (rc != SQLITE_DONE) return detail::sqlite::failure(db, rc, "reading an entity version");
      }
      const std::string name = c.entity.collection + "/" + c.entity.id;
      if (current != c.expected_version) return error(errc::conflict, "entity " + name + " changed since it was read");
      if (c.erase && current == 0) return error(errc::conflict, "entity " + name + " no longer exists");
      if (!c.erase && !c.entity.natural_key.empty()) {
        auto& s = natural_key_owner;
        detail::sqlite::reset_on_exit reset_guard{s};
        s.bind(1, c.entity.collection).bind(2, c.entity.user_id).bind(3, c.entity.natural_key);
        const int rc = s.step();
        if (rc == SQLITE_ROW && s.text(0) != c.entity.id)
          return error(errc::conflict, "natural key " + c.entity.natural_key + " belongs to " + s.text(0));
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) return detail::sqlite::failure(db, rc, "checking a natural key");
      }
      std::int64_t target_seq = 0;
      std::string target_user, target_key;
      if (c.op != entity_change::event_op::append) {
        auto& s = find_seq;
        detail::sqlite::reset_on_exit reset_guard{s};
        s.bind(1, c.target);
        const int rc = s.step();
        if (rc == SQLITE_DONE) return error(errc::conflict, "event " + c.target.to_string() + " no longer exists");
        if (rc != SQLITE_ROW) return detail::sqlite::failure(db, rc, "reading an event");
        if (s.integer(1) != static_cast<int>(status::pending) || s.integer(2) != 0)
          return error(errc::conflict, "event " + c.target.to_string() + " was claimed since it was read");
        target_seq = s.int64(0);
        target_user = s.text(3);
        target_key = s.text(4);
      }
      // Within this savepoint a failure below rolls all of it back.
      if (c.erase) {
        delete_entity.bind(1, c.entity.collection).bind(2, c.entity.id);
        if (auto d = step_done(delete_entity, db, "deleting an entity"); !d) return d;
      } else {
        auto& s = upsert_entity;
        const entity_record& r = c.entity;
        s.bind(1, r.collection).bind(2, r.id).bind(3, r.user_id);
        if (r.natural_key.empty()) s.bind_null(4);
        else s.bind(4, r.natural_key);
        s.bind_blob(5, r.payload).bind(6, r.occurred_at).bind(7, static_cast<int>(r.sync)).bind(8, r.remote_id);
        s.bind(9, r.sync_error);
        if (r.last_event.is_nil()) s.bind_null(10);
        else s.bind(10, r.last_event);
        s.bind(11, current + 1).bind(12, r.created_at).bind(13, r.updated_at);
        if (auto d = step_done(s, db, "writing an entity"); !d) return d;
      }
      status_tally tally;
      switch (c.op) {
        case entity_change::event_op::append: {
          event e = c.event;
          if (auto inserted = insert_event(e, tally); !inserted) return inserted;
          break;
        }
        case entity_change::event_op::replace:
          replace_event.bind(1, target_seq).bind(2, c.event.type).bind_blob(3, c.event.payload).bind(4, c.event.updated_at);
          return step_done(replace_event, db, "rewriting an unsent event");
        case entity_change::event_op::drop:
          drop_event.bind(1, target_seq);
          if (auto d = step_done(drop_event, db, "dropping an unsent event"); !d) return d;
          if (auto r = refresh(target_user, target_key, target_seq); !r) return r;
          tally.add(target_user, status::pending, -1);  // only a pending event is dropped
          break;
      }
      return apply_counts(tally);
    }

    // ---- reads ---------------------------------------------------------------------------------

    result<std::optional<event>> find(event_id id) {
      auto lock = lock_connection();
      auto& s = find_event;
      detail::sqlite::reset_on_exit reset_guard{s};
      s.bind(1, id);
      const int rc = s.step();
      if (rc == SQLITE_DONE) return std::optional<event>();
      if (rc != SQLITE_ROW) return detail::sqlite::failure(db, rc, "finding an event");
      return std::optional<event>(detail::sqlite::read_event(s));
    }

    result<std::vector<event>> query(const event_query& q) {
      auto lock = lock_connection();
      // A status and a user: the status index holds the page in seq order. A status that is not
      // completed, for all users: the status index holds a range no longer than the events waiting
      // in that status, which SQLite sorts. Otherwise the events are read in seq order from the
      // cursor until the page is full, which is short for completed events (most of the history)
      // and for the user a device mostly holds; left to itself, SQLite would read every such event
      // through an index and sort them all.
      const bool by_index = q.status_is && (q.user_id || *q.status_is != status::completed);
      std::string sql = "SELECT " + std::string(detail::sqlite::event_columns) + " FROM outbox_events" +
                        (by_index ? " INDEXED BY outbox_events_status" : " NOT INDEXED") + " WHERE seq > ?1";
      if (q.status_is) sql += " AND status = ?2";
      if (q.user_id) sql += " AND user_id = ?3";
      sql += " ORDER BY seq LIMIT ?4";
      detail::sqlite::statement s(db, sql);
      if (s.prepare_error()) return *s.prepare_error();
      s.bind(1, q.after_seq);
      if (q.status_is) s.bind(2, static_cast<int>(*q.status_is));
      if (q.user_id) s.bind(3, *q.user_id);
      s.bind(4, static_cast<std::int64_t>(q.limit));
      std::vector<event> page;
      int rc;
      while ((rc = s.step()) == SQLITE_ROW) page.push_back(detail::sqlite::read_event(s));
      if (rc != SQLITE_DONE) return detail::sqlite::failure(db, rc, "querying events");
      return page;
    }

    using counts_by_user = std::map<std::string, std::array<std::int64_t, status_count>, std::less<>>;

    /// Counts the waiting statuses per user, from the events (through the status index).
    result<void> count_waiting_into(counts_by_user& out) {
      out.clear();
      auto& s = count_waiting;
      detail::sqlite::reset_on_exit reset{s};
      int rc;
      while ((rc = s.step()) == SQLITE_ROW) {
        const int st = s.integer(0);
        if (st >= 0 && st < static_cast<int>(status_count)) out[s.text(1)][static_cast<std::size_t>(st)] = s.int64(2);
      }
      if (rc != SQLITE_DONE) return detail::sqlite::failure(db, rc, "counting events");
      return {};
    }

    /// The waiting counts stats() can use: the kept ones, counted again first if they are stale.
    /// Inside a transaction of this connection (a transaction_guard) its uncommitted changes are
    /// visible, and the kept counts do not hold them: counted into `scratch` instead.
    result<const counts_by_user*> waiting_now(counts_by_user& scratch) {
      if (sqlite3_get_autocommit(db) == 0) {
        if (auto c = count_waiting_into(scratch); !c) return c.error();
        return &scratch;
      }
      std::int64_t version = 0;
      {
        detail::sqlite::reset_on_exit reset{data_version};
        const int rc = data_version.step();
        if (rc != SQLITE_ROW) return detail::sqlite::failure(db, rc, "reading the data version");
        version = data_version.int64(0);
      }
      if (!waiting.valid || waiting.data_version != version) {
        waiting.valid = false;
        if (auto c = count_waiting_into(waiting.by_user); !c) return c.error();
        waiting.valid = true;
        waiting.data_version = version;
      }
      return &waiting.by_user;
    }

    /// A user's oldest pending event, or oldest claimable one: its seq, if any.
    result<std::optional<std::int64_t>> oldest_seq(detail::sqlite::statement& s, std::string_view user,
                                                   std::optional<timestamp> now = {}) {
      detail::sqlite::reset_on_exit reset{s};
      s.bind(1, user);
      if (now) s.bind(2, *now);
      const int rc = s.step();
      if (rc != SQLITE_ROW) return detail::sqlite::failure(db, rc, "finding the oldest event");
      if (s.is_null(0)) return std::optional<std::int64_t>();
      return std::optional<std::int64_t>(s.int64(0));
    }

    /// now - created_at of the event `seq`.
    result<std::optional<duration>> age_of(std::optional<std::int64_t> seq, timestamp now) {
      if (!seq) return std::optional<duration>();
      auto& s = created_at_of;
      detail::sqlite::reset_on_exit reset{s};
      s.bind(1, *seq);
      const int rc = s.step();
      if (rc == SQLITE_ROW) return std::optional<duration>(now - s.time(0));
      if (rc != SQLITE_DONE) return detail::sqlite::failure(db, rc, "reading an event's creation time");
      return std::optional<duration>();
    }

    result<event_stats> stats(std::optional<std::string_view> user, timestamp now) {
      auto lock = lock_connection();
      event_stats stats;
      counts_by_user scratch;
      auto counts = waiting_now(scratch);
      if (!counts) return counts.error();
      const auto pending = static_cast<std::size_t>(status::pending);
      const auto failed = static_cast<std::size_t>(status::failed);
      // The oldest pending and oldest claimable events: the earliest of each user's.
      std::optional<std::int64_t> oldest_pending, oldest_due;
      auto earliest = [](std::optional<std::int64_t>& best, std::optional<std::int64_t> seq) {
        if (seq && (!best || *seq < *best)) best = seq;
      };
      // One user's row is found; all users' are walked.
      auto row_it = (*counts)->begin(), rows_end = (*counts)->end();
      if (user) std::tie(row_it, rows_end) = (*counts)->equal_range(*user);
      for (; row_it != rows_end; ++row_it) {
        const auto& [name, row] = *row_it;
        for (std::size_t st = 0; st < status_count; ++st)
          stats.counts[st] += static_cast<std::size_t>(std::max<std::int64_t>(row[st], 0));
        if (row[pending] > 0) {
          auto first = oldest_seq(oldest_pending_of, name);
          if (!first) return first.error();
          earliest(oldest_pending, *first);
        }
        if (row[pending] > 0 || row[failed] > 0) {  // only their lines have a head to claim
          auto first = oldest_seq(oldest_due_of, name, now);
          if (!first) return first.error();
          earliest(oldest_due, *first);
        }
      }
      {
        auto& s = stats_completed(user.has_value());
        detail::sqlite::reset_on_exit reset{s};
        if (user) s.bind(1, *user);
        const int rc = s.step();
        if (rc == SQLITE_ROW) stats.counts[static_cast<std::size_t>(status::completed)] = static_cast<std::size_t>(s.int64(0));
        else if (rc != SQLITE_DONE) return detail::sqlite::failure(db, rc, "counting completed events");
      }
      auto pending_age = age_of(oldest_pending, now);
      if (!pending_age) return pending_age.error();
      stats.oldest_pending_age = *pending_age;
      auto due_age = age_of(oldest_due, now);
      if (!due_age) return due_age.error();
      stats.oldest_due_age = *due_age;
      return stats;
    }

    result<std::optional<timestamp>> next_wake(std::string_view user, timestamp) {
      auto lock = lock_connection();
      std::optional<timestamp> wake;
      for (auto* s : {&next_retry, &next_lease_end}) {
        detail::sqlite::reset_on_exit reset_guard{*s};
        if (s == &next_retry) s->bind(1, user);
        const int rc = s->step();
        if (rc != SQLITE_ROW) return detail::sqlite::failure(db, rc, "reading the next wake-up");
        if (!s->is_null(0)) {
          const timestamp t = s->time(0);
          if (!wake || t < *wake) wake = t;
        }
      }
      return wake;
    }

    result<std::optional<entity_record>> find_entity(std::string_view collection, std::string_view id) {
      auto lock = lock_connection();
      auto& s = find_entity_stmt;
      detail::sqlite::reset_on_exit reset_guard{s};
      s.bind(1, collection).bind(2, id);
      const int rc = s.step();
      if (rc == SQLITE_DONE) return std::optional<entity_record>();
      if (rc != SQLITE_ROW) return detail::sqlite::failure(db, rc, "finding an entity");
      return std::optional<entity_record>(detail::sqlite::read_entity(s));
    }

    result<std::optional<entity_record>> find_entity_by_key(std::string_view collection, std::string_view user,
                                                            std::string_view natural_key) {
      auto lock = lock_connection();
      auto& s = find_by_key_stmt;
      detail::sqlite::reset_on_exit reset_guard{s};
      s.bind(1, collection).bind(2, user).bind(3, natural_key);
      const int rc = s.step();
      if (rc == SQLITE_DONE) return std::optional<entity_record>();
      if (rc != SQLITE_ROW) return detail::sqlite::failure(db, rc, "finding an entity by natural key");
      return std::optional<entity_record>(detail::sqlite::read_entity(s));
    }

    result<std::vector<entity_record>> query_entities(const entity_query& q) {
      auto lock = lock_connection();
      std::string sql = "SELECT " + std::string(detail::sqlite::entity_columns) +
                        " FROM outbox_entities WHERE collection = ?1";
      if (q.user_id) sql += " AND user_id = ?2";
      if (q.sync) sql += " AND sync = ?3";
      if (q.from) sql += " AND occurred_at >= ?4";
      if (q.until) sql += " AND occurred_at < ?5";
      sql += " ORDER BY occurred_at, id LIMIT ?6";
      detail::sqlite::statement s(db, sql);
      if (s.prepare_error()) return *s.prepare_error();
      s.bind(1, q.collection);
      if (q.user_id) s.bind(2, *q.user_id);
      if (q.sync) s.bind(3, static_cast<int>(*q.sync));
      if (q.from) s.bind(4, *q.from);
      if (q.until) s.bind(5, *q.until);
      s.bind(6, static_cast<std::int64_t>(q.limit));
      std::vector<entity_record> rows;
      int rc;
      while ((rc = s.step()) == SQLITE_ROW) rows.push_back(detail::sqlite::read_entity(s));
      if (rc != SQLITE_DONE) return detail::sqlite::failure(db, rc, "querying entities");
      return rows;
    }

    std::vector<std::string> explain_stats() {
      auto lock = lock_connection();
      std::vector<std::string> plan;
      using detail::sqlite::count_completed;
      for (std::string_view sql : {detail::sqlite::count_waiting_sql, detail::sqlite::oldest_pending_sql,
                                   count_completed.user, count_completed.all, detail::sqlite::oldest_due_sql}) {
        detail::sqlite::statement s(db, "EXPLAIN QUERY PLAN " + std::string(sql));
        while (s.step() == SQLITE_ROW) plan.push_back(std::string(sql.substr(0, 40)) + "...: " + s.text(3));
      }
      return plan;
    }

    std::vector<std::string> explain_claim() {
      auto lock = lock_connection();
      std::vector<std::string> plan;
      for (std::string_view sql : {detail::sqlite::ready_heads_sql, detail::sqlite::promote_due_sql,
                                   detail::sqlite::expired_leases_sql, detail::sqlite::line_head_sql}) {
        detail::sqlite::statement s(db, "EXPLAIN QUERY PLAN " + std::string(sql));
        while (s.step() == SQLITE_ROW) plan.push_back(s.text(3));
      }
      return plan;
    }
  };

  std::unique_ptr<state> s_;
};

}  // namespace outbox
