#pragma once
/// \file
/// `outbox::postgres_storage`: the storage for services. Several instances of a service write
/// their rows and outbox events into one PostgreSQL database, and several relays (threads,
/// processes or machines, each an `Outbox` over its own `postgres_storage`) deliver them. Link
/// `outbox::postgres` (libpq; Debian: libpq-dev). Nothing else in outbox includes this header.
///
///     auto storage = outbox::postgres_storage::open("host=/run/postgresql dbname=app").value();
///     outbox::options o;
///     o.exclusive = false;  // other relays share the database
///     outbox::Outbox<outbox::postgres_storage, my_transport> relay(std::move(storage), my_transport{}, {}, {}, o);
///
/// The transactional outbox: `postgres_storage::adopt(conn)` works on the application's own
/// `PGconn*`. A write made while that connection is inside a transaction (the application's
/// BEGIN, or the RAII `transaction()` guard) joins it in a savepoint, so the application's rows
/// and the outbox event commit or roll back together.
///
/// Many relays on one database:
/// - Claims take rows `FOR UPDATE SKIP LOCKED`. A row another relay is claiming or recording is
///   passed over, not waited for, so relays never block each other, and since the claim marks
///   the row `processing` in the same statement, an event is never handed to two relays (the
///   next claim no longer finds it claimable). The alternatives cost more: an advisory lock per
///   row takes a round trip per event; SERIALIZABLE claims fail and retry under contention.
/// - Per-key order: only the head of an ordering key is claimable (no undelivered event of the
///   key before it, none in flight), so a key's events are in flight on at most one relay, and a
///   key waiting for its retry holds back only itself. Append order is `seq`, which PostgreSQL
///   assigns at insert: two transactions appending to one key at the same time are ordered by
///   their inserts, not their commits.
/// - Leases with fencing: each claim gets a token from one sequence shared by all relays; an
///   outcome applies only while its event is still processing under that token, so a late result
///   from an expired claim changes nothing. A claim whose lease ended is expired by the next
///   claim of any relay (back to pending, or dead after the last attempt).
/// - A relay holds a session advisory lock on its `relay_id()` while connected, and its claims
///   carry that id. The start-up release of `options.exclusive`, and the re-bounding after the
///   wall clock stepped back, shorten only leases of relays whose lock is gone: a live relay's
///   claims are never released early, whatever another relay's options say.
/// - New events wake idle relays: a trigger sends NOTIFY on `<schema>_events` for each
///   appending statement; `on_new_events` (which `Outbox` subscribes to) listens on a second
///   connection. Polling (`options.poll_interval`) stays the fallback.
///
/// Round trips: an append of any batch size is one statement (one array per column, unnested
/// by the server) inside the group commit's transaction; a claim is one round trip (lease
/// expiry and the claim, pipelined); recording a batch's outcomes is one statement. Concurrent
/// writers of one storage share one transaction and one COMMIT (detail/group_commit.hpp).
///
/// Schema: created and migrated by the library in its own schema (`postgres_options::schema`,
/// default `outbox`), under an advisory lock so relays starting together create it once; a
/// newer schema is refused with `errc::schema_too_new` and left untouched. The schema name is
/// checked as an identifier when the storage is built; every value is a bound parameter.
///
/// Errors: `postgres_errc::connection_lost`, `server_shutdown` (57P0x),
/// `serialization_failure` (40001, 40P01), `errc::disk_full` (53100); any other server error is
/// `postgres_errc::server_error` with its SQLSTATE in the message. After a lost connection the
/// next call connects again (an adopted connection is reset with PQreset).
///
/// Where each part lives (namespace `outbox::detail::postgres`, folder `storage/postgres/`):
/// `postgres_storage.hpp` the public class, its transaction guard and wake-up subscription;
/// `options.hpp` the options; `errors.hpp` the error codes; `connection.hpp` the RAII libpq
/// handles and pipelined round trips; `codec.hpp` values in PostgreSQL's text format;
/// `schema.hpp` the schema and its migration; `statements.hpp` every SQL statement; `link.hpp`
/// what every part works on (the connection, the relay, reconnection); `append.hpp`,
/// `claim.hpp`, `record.hpp`, `maintenance.hpp`, `queries.hpp`, `entities.hpp` the operations;
/// `group_commit.hpp` the group commit; `listener.hpp` LISTEN/NOTIFY.

#include "outbox/storage/postgres/errors.hpp"
#include "outbox/storage/postgres/options.hpp"
#include "outbox/storage/postgres/postgres_storage.hpp"
