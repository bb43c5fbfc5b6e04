#pragma once
/// \file
/// The power-loss simulator (testing/power_loss.hpp) under SQLite: a VFS over SQLite's default
/// one, in the spirit of SQLite's own crash-test VFS, that tells a `recorder` every write,
/// truncation, sync and deletion SQLite makes, and the directory syncs its unix VFS makes:
/// after the first sync of a WAL or journal file it created, and on a deletion that asks for
/// one. Open a storage over it by name:
///
///     outbox::testing::power_loss::recorder rec(dir);
///     outbox::testing::power_loss::sqlite_vfs::record_into(&rec);
///     outbox::sqlite_options o;
///     o.vfs = outbox::testing::power_loss::sqlite_vfs::name();
///     auto s = outbox::sqlite_storage::open((dir / "outbox.db").string(), o);
///
/// Its syncs are recorded, never made: the files it writes are for a simulation. Links SQLite.

#include <sqlite3.h>

#include <atomic>
#include <cstddef>
#include <filesystem>
#include <string>

#include <outbox/storage/sqlite/vfs_layer.hpp>
#include <outbox/testing/power_loss.hpp>

namespace outbox::testing::power_loss {

class sqlite_vfs {
 public:
  /// Registers the VFS (once, not as the default); its name.
  static const char* name() {
    static const bool registered = [] {
      sqlite3_vfs* base = sqlite3_vfs_find(nullptr);
      if (base == nullptr) return false;
      static layered layer{*base, base};
      layer.vfs.szOsFile = shim::os_file_size(*base);
      layer.vfs.pNext = nullptr;
      layer.vfs.zName = id;
      layer.vfs.xOpen = x_open;
      layer.vfs.xDelete = x_delete;
      return sqlite3_vfs_register(&layer.vfs, 0) == SQLITE_OK;
    }();
    return registered ? id : nullptr;
  }

  /// The recorder files opened from now on tell (nullptr: none; they still make no sync).
  static void record_into(recorder* rec) noexcept { current().store(rec); }

 private:
  static constexpr const char* id = "outbox-power-loss";

  struct layered {
    sqlite3_vfs vfs;  // first: SQLite calls the methods with its address
    sqlite3_vfs* base;
  };
  struct file {
    sqlite3_file base;  // first: SQLite sees this
    sqlite3_io_methods methods;
    sqlite3_file* real;
    recorder* rec;
    int handle;
    bool sync_directory;  // a WAL or journal it created: its directory is synced with its first sync
    std::filesystem::path path;
  };
  friend struct outbox::detail::sqlite::vfs_layer<sqlite_vfs>;
  using shim = outbox::detail::sqlite::vfs_layer<sqlite_vfs>;

  static std::atomic<recorder*>& current() noexcept {
    static std::atomic<recorder*> rec{nullptr};
    return rec;
  }
  static sqlite3_vfs* base_of(sqlite3_vfs* vfs) noexcept { return reinterpret_cast<layered*>(vfs)->base; }
  static file* self(sqlite3_file* f) noexcept { return shim::self(f); }
  static sqlite3_file* real(sqlite3_file* f) noexcept { return shim::real(f); }

  static int x_open(sqlite3_vfs* vfs, sqlite3_filename name, sqlite3_file* p, int flags, int* out_flags) {
    file* f = nullptr;
    const int rc = shim::open(base_of(vfs), name, p, flags, out_flags, f);
    if (!f) return rc;
    f->rec = rc == SQLITE_OK && name ? current().load() : nullptr;
    f->handle = -1;
    if (f->rec) {
      f->path = name;
      f->handle = f->rec->opened(f->path, false);
      // As the unix VFS: a WAL or journal opened to be created has its directory synced too.
      f->sync_directory = (flags & SQLITE_OPEN_CREATE) != 0 &&
                          (flags & (SQLITE_OPEN_WAL | SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_SUPER_JOURNAL)) != 0;
    }
    return rc;
  }
  static int x_delete(sqlite3_vfs* vfs, const char* name, int sync_dir) {
    sqlite3_vfs* base = base_of(vfs);
    const int rc = base->xDelete(base, name, 0);  // the directory sync is recorded, not made
    if (recorder* rec = current().load(); rec && rc == SQLITE_OK) {
      rec->unlinked(name);
      if (sync_dir) rec->synced_directory(std::filesystem::path(name).parent_path());
    }
    return rc;
  }

  static int x_close(sqlite3_file* p) {
    const int rc = real(p)->pMethods->xClose(real(p));
    self(p)->~file();
    return rc;
  }
  static int x_write(sqlite3_file* p, const void* data, int n, sqlite3_int64 at) {
    const int rc = real(p)->pMethods->xWrite(real(p), data, n, at);
    if (rc == SQLITE_OK && self(p)->rec)
      self(p)->rec->wrote(self(p)->handle, static_cast<std::uint64_t>(at),
                          std::string_view(static_cast<const char*>(data), static_cast<std::size_t>(n)));
    return rc;
  }
  static int x_truncate(sqlite3_file* p, sqlite3_int64 size) {
    const int rc = real(p)->pMethods->xTruncate(real(p), size);
    if (rc == SQLITE_OK && self(p)->rec) self(p)->rec->truncated(self(p)->handle, static_cast<std::uint64_t>(size));
    return rc;
  }
  static int x_sync(sqlite3_file* p, int) {
    file* f = self(p);
    if (f->rec) {
      f->rec->synced(f->handle);
      if (f->sync_directory) f->rec->synced_directory(f->path.parent_path());
    }
    f->sync_directory = false;
    return SQLITE_OK;
  }
  /// Nothing waits in this layer: every call reaches the file below as it comes.
  static int settle(file* /*f*/) noexcept { return SQLITE_OK; }
};

}  // namespace outbox::testing::power_loss
