#pragma once
/// \file
/// The PostgreSQL storage's errors: `outbox::postgres_errc` (its own `std::error_category`,
/// "outbox.postgres") for what only a server connection can do, and the mapping from a failed
/// libpq call or SQLSTATE to an `outbox::error`. Disk full is `outbox::errc::disk_full`, the
/// code every storage uses for it.

#include <libpq-fe.h>

#include <string>
#include <string_view>
#include <system_error>

#include "outbox/error.hpp"

namespace outbox {

/// What only a database server can answer.
enum class postgres_errc {
  connection_lost = 1,    ///< the connection broke (or could not be made); the next call reconnects
  server_shutdown,        ///< the server is shutting down or terminated this connection (57P01..57P03)
  serialization_failure,  ///< a concurrent transaction conflicted (40001, 40P01); retry the call
  server_error,           ///< any other error the server reported; the message holds its SQLSTATE
};

namespace detail::postgres {
class error_category_impl final : public std::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "outbox.postgres"; }
  [[nodiscard]] std::string message(int value) const override {
    switch (static_cast<postgres_errc>(value)) {
      case postgres_errc::connection_lost: return "connection to the server lost";
      case postgres_errc::server_shutdown: return "server shutting down";
      case postgres_errc::serialization_failure: return "serialization failure";
      case postgres_errc::server_error: return "server error";
    }
    return "unknown PostgreSQL error";
  }
};
}  // namespace detail::postgres

/// The category of `outbox::postgres_errc`; its name() is "outbox.postgres".
[[nodiscard]] inline const std::error_category& postgres_category() noexcept {
  static const detail::postgres::error_category_impl category;
  return category;
}

[[nodiscard]] inline std::error_code make_error_code(postgres_errc e) noexcept {
  return {static_cast<int>(e), postgres_category()};
}

}  // namespace outbox

template <>
struct std::is_error_code_enum<outbox::postgres_errc> : std::true_type {};

namespace outbox::detail::postgres {

/// The typed error for a SQLSTATE (five characters) and the server's message.
[[nodiscard]] inline error from_sqlstate(std::string_view state, std::string_view what, std::string_view text) {
  std::string message = std::string(what) + ": " + std::string(text) + " (SQLSTATE " + std::string(state) + ")";
  if (state == "53100") return error(errc::disk_full, std::move(message));
  if (state == "40001" || state == "40P01") return error(make_error_code(postgres_errc::serialization_failure), std::move(message));
  if (state.substr(0, 2) == "57") return error(make_error_code(postgres_errc::server_shutdown), std::move(message));
  if (state.substr(0, 2) == "08") return error(make_error_code(postgres_errc::connection_lost), std::move(message));
  if (state == "3F000") return error(errc::schema_mismatch, std::move(message));  // no such schema
  return error(make_error_code(postgres_errc::server_error), std::move(message));
}

/// The error of a failed command: the server's SQLSTATE if it sent one, else a lost connection.
[[nodiscard]] inline error failure(PGconn* conn, const PGresult* res, std::string_view what) {
  std::string text = res ? PQresultErrorMessage(res) : "";
  if (text.empty() && conn) text = PQerrorMessage(conn);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (const char* detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : nullptr; detail && *detail)
    text += std::string(" (") + detail + ")";
  const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  if (state && *state) return from_sqlstate(state, what, text);
  return error(make_error_code(postgres_errc::connection_lost), std::string(what) + ": " + text);
}

/// Whether `e` is the server's error with SQLSTATE `state` (from_sqlstate keeps it in the message).
[[nodiscard]] inline bool has_sqlstate(const error& e, std::string_view state) {
  return e.code.category() == postgres_category() &&
         e.message.find("(SQLSTATE " + std::string(state) + ")") != std::string::npos;
}

/// Whether `e` means the connection is gone: the next call must connect again.
[[nodiscard]] inline bool connection_gone(const error& e) noexcept {
  return e.code == make_error_code(postgres_errc::connection_lost) ||
         e.code == make_error_code(postgres_errc::server_shutdown);
}

}  // namespace outbox::detail::postgres
