#pragma once
/// \file
/// The whole state behind one `sqlite_storage`: the layers of connection.hpp, the group commit
/// every write goes through, and opening (schema, then statements).

#include <sqlite3.h>

#include <string>
#include <utility>

#include "outbox/error.hpp"
#include "outbox/storage/sqlite/group_commit.hpp"
#include "outbox/storage/sqlite/options.hpp"
#include "outbox/storage/sqlite/reads.hpp"
#include "outbox/storage/sqlite/schema.hpp"

namespace outbox::detail::sqlite {

struct storage_state : event_reads {
  group_commit writer{group_engine{this}};

  storage_state(sqlite3* opened, bool owns, std::string file, sqlite_options o)
      : event_reads(opened, owns, std::move(file), o) {}

  /// Brings the database to this library's schema (or refuses it) and prepares the statements.
  result<void> initialise() {
    auto lock = lock_connection();
    if (auto ready = schema_migration{db, handle.owned(), path}.run(options); !ready) return ready;
    return prepare(db);
  }

  /// Runs `work` in a transaction and returns once that transaction is durable (or failed).
  template <class F>
  result<void> write(F&& work) {
    return writer.write(std::forward<F>(work));
  }
};

}  // namespace outbox::detail::sqlite
