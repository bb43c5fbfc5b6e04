// README wrapper: the block is the body of a function given the application's SQLite connection
// `app_db` and the `events` to append, returning whether both committed.
#include <outbox/storage/sqlite.hpp>

#include <sqlite3.h>

#include <span>

outbox::result<void> save_note(sqlite3* app_db, std::span<outbox::event> events) {
  // {snippet}
}
