// README wrapper: the block is the body of a function given the application's PostgreSQL
// connection `app_conn` and the `events` to append, returning whether both committed.
#include <outbox/storage/postgres.hpp>

#include <libpq-fe.h>

#include <span>

outbox::result<void> save_order(PGconn* app_conn, std::span<outbox::event> events) {
  // {snippet}
}
