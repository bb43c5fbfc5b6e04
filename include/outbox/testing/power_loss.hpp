#pragma once
/// \file
/// A power-loss simulator: what a storage's files may hold after the power goes, and a check
/// that the storage, reopened from each such state, still holds everything it acknowledged.
///
/// A process crash (`kill -9`) keeps every byte handed to `write()`: it is in the page cache.
/// A power cut keeps only what was synced, and of the rest any part, in any order. The
/// `recorder` is told every write, truncation, sync, rename, unlink and directory sync a storage
/// makes under a directory (through `recording_io`, the file storage's I/O layer, or a VFS for
/// SQLite: testing/power_loss_sqlite.hpp), and builds from that trace, at any point of it, a
/// state a POSIX file system may leave:
///
/// - a file's content as of its last `fsync`/`fdatasync` is kept;
/// - each write since is dropped, kept, or torn: kept in some of its 512-byte sectors only
///   (a write past the end that is lost leaves zeros if a later byte made it);
/// - a truncation since the last sync is kept or not;
/// - creates, renames and unlinks since the last sync of their directory each persist or not
///   (a rename is atomic: the name points at the old file or the new one).
///
/// `check` runs a workload of saves (an entity and its event in one write), claims, outcomes,
/// compactions and purges on a storage opened over a recorder, keeps the state after each
/// acknowledged call, then cuts the trace at random points, writes each cut's state to a fresh
/// directory, reopens the storage there and compares; every 4th cut is followed by a second one
/// during the storage's recovery from it. Nothing here depends on a test framework.

#include <outbox/testing/power_loss/check.hpp>
#include <outbox/testing/power_loss/recorder.hpp>
