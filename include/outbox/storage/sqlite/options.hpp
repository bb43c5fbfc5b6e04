#pragma once
/// \file
/// `outbox::sqlite_options`: how `outbox::sqlite_storage` opens a database file.

#include <chrono>
#include <cstdint>
#include <string>

namespace outbox {

/// How a database file is opened.
struct sqlite_options {
  enum class sync_mode : std::uint8_t {
    full,    ///< every commit is synced: survives power loss (default)
    normal,  ///< WAL synced at checkpoints: survives a process crash; a power cut may lose the commits since the last checkpoint, never consistency
    off,     ///< never synced: for tests and throwaway data
  };
  sync_mode synchronous = sync_mode::full;
  std::chrono::milliseconds busy_timeout{5000};  ///< how long to wait for another writer
  bool group_commit = true;                      ///< share one transaction among concurrent writers
  /// With `synchronous = full`, on a database `open()` opened: each commit writes its WAL frames
  /// with one `pwrite` (per 64 KiB) just before its sync, instead of two per page. See
  /// detail::sqlite::wal_gather. Ignored by `adopt()`, whose connection keeps its own VFS.
  bool gather_wal_writes = true;
  /// The VFS to open the database with, by the name it was registered under
  /// (`sqlite3_vfs_register`); empty: SQLite's default. WAL gathering layers over it. For a test
  /// VFS such as the power-loss simulator's (testing/power_loss_sqlite.hpp). Ignored by `adopt()`.
  std::string vfs{};
};

}  // namespace outbox
