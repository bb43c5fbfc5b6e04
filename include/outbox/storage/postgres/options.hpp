#pragma once
/// \file
/// `outbox::postgres_options`: how `outbox::postgres_storage` uses its database.

#include <chrono>
#include <string>

namespace outbox {

/// How the storage uses its database.
struct postgres_options {
  /// The schema that holds the outbox's tables, created and migrated by the storage. An SQL
  /// identifier of 1 to 48 characters: lower-case ASCII letters, digits and `_`, not starting
  /// with a digit or `pg_`. Anything else is refused when the storage is built.
  std::string schema = "outbox";
  /// Share one transaction among concurrent writers of this storage (see detail/group_commit.hpp).
  bool group_commit = true;
  /// Listen for new events on a second connection (LISTEN/NOTIFY) and wake the outbox's runner,
  /// so an idle relay starts at once instead of at its next poll. Needs a conninfo: the one the
  /// storage was opened with, or `listen_conninfo` for an adopted connection.
  bool listen = true;
  /// The connection the listener opens when the storage adopted the application's connection.
  std::string listen_conninfo{};
};

}  // namespace outbox
