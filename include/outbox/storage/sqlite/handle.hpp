#pragma once
/// \file
/// The SQLite C handles in RAII types: the connection, the prepared statement (with its binding
/// and reading), and the error translation every SQLite call shares.

#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/event_id.hpp"

namespace outbox::detail::sqlite {

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
  /// use binds, steps and resets within one scope, over strings that outlive it. (Copying would
  /// cost an allocation and a copy per bound string, on every enqueue.)
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


/// Steps a statement that returns nothing the caller needs, and resets it.
inline result<void> step_done(statement& s, sqlite3* db, std::string_view what) {
  reset_on_exit reset{s};
  const int rc = s.step();
  if (rc == SQLITE_DONE || rc == SQLITE_ROW) return {};
  return failure(db, rc, what);
}

/// The row a bound look-up finds, read by `read`, or none; the statement is reset either way.
template <class Read>
auto find_row(statement& s, sqlite3* db, std::string_view what, Read read)
    -> result<std::optional<decltype(read(std::as_const(s)))>> {
  using row = decltype(read(std::as_const(s)));
  reset_on_exit reset{s};
  const int rc = s.step();
  if (rc == SQLITE_DONE) return std::optional<row>();
  if (rc != SQLITE_ROW) return failure(db, rc, what);
  return std::optional<row>(read(std::as_const(s)));
}

/// Every row a bound query returns, each read by `read`; the statement is reset either way.
template <class Read>
auto read_rows(statement& s, sqlite3* db, std::string_view what, Read read)
    -> result<std::vector<decltype(read(std::as_const(s)))>> {
  std::vector<decltype(read(std::as_const(s)))> rows;
  reset_on_exit reset{s};
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) rows.push_back(read(std::as_const(s)));
  if (rc != SQLITE_DONE) return failure(db, rc, what);
  return rows;
}

/// Runs SQL text (several statements allowed); errors name `path` when it is not empty.
inline result<void> exec(sqlite3* db, std::string_view sql, std::string_view what, std::string_view path) {
  char* message = nullptr;
  const int rc = sqlite3_exec(db, std::string(sql).c_str(), nullptr, nullptr, &message);
  if (rc == SQLITE_OK) return {};
  std::string text = std::string(what) + ": " + (message ? message : sqlite3_errstr(rc));
  sqlite3_free(message);
  return outbox::error(code_of(rc), path.empty() ? text : std::string(path) + ": " + text);
}

/// The first column of the first row of a one-off query, or 0 when it returns no row.
inline result<std::int64_t> scalar(sqlite3* db, std::string_view sql, std::string_view what) {
  statement s(db, sql);
  if (s.prepare_error()) return *s.prepare_error();
  const int rc = s.step();
  if (rc == SQLITE_ROW) return s.int64(0);
  if (rc == SQLITE_DONE) return std::int64_t{0};
  return failure(db, rc, what);
}

/// A connection, closed on destruction when the storage opened it (an adopted one is the
/// application's). Statements on it must be finalised first: declare them after it.
class connection_handle {
 public:
  connection_handle(sqlite3* db, bool owned) noexcept : db_(db), owned_(owned) {}
  connection_handle(const connection_handle&) = delete;
  connection_handle& operator=(const connection_handle&) = delete;
  ~connection_handle() {
    if (owned_) sqlite3_close_v2(db_);
  }
  [[nodiscard]] sqlite3* get() const noexcept { return db_; }
  [[nodiscard]] bool owned() const noexcept { return owned_; }

 private:
  sqlite3* db_;
  bool owned_;
};

}  // namespace outbox::detail::sqlite
