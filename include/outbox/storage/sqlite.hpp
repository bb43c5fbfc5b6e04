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
///
/// Where each part lives (namespace `outbox::detail::sqlite`, folder `storage/sqlite/`):
/// `sqlite_storage.hpp` the public class and its transaction guard; `options.hpp` the options;
/// `handle.hpp` the RAII connection and statement; `statements.hpp` the one table of prepared
/// statements; `schema.hpp` the schema and its migrations; `wal_gather.hpp` the VFS;
/// `connection.hpp` what every part works on; `claim.hpp` the claim engine; `maintenance.hpp`
/// resets, purges and re-bounding; `entities.hpp` entity commits; `stats_cache.hpp` and
/// `reads.hpp` the reads; `group_commit.hpp` the group commit; `state.hpp` all of them together.

#include "outbox/storage/sqlite/options.hpp"
#include "outbox/storage/sqlite/sqlite_storage.hpp"
