#pragma once
/// \file
/// The WAL-gathering VFS that `sqlite_storage::open()` uses under `synchronous = full`.

#include <sqlite3.h>

#include <algorithm>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "outbox/storage/sqlite/vfs_layer.hpp"

namespace outbox::detail::sqlite {

/// A VFS over the default one that gathers the writes to a WAL file and writes them at once.
///
/// SQLite writes each WAL frame as two calls (a 24-byte header, then the page), so a commit of
/// a few pages makes ten or more `pwrite` calls before its sync, and right after a sync one call
/// of the same bytes costs about what two of them do (see bench/README.md). Here a WAL file's
/// writes that continue one another are kept in memory and written (in pieces of at most 64 KiB,
/// since the unix VFS takes less than 128 KiB a call) when SQLite syncs the file, and before
/// anything that could observe the file: a read, a size query, a truncation, a file control, a
/// write elsewhere, closing.
///
/// At most `pending_limit` bytes wait: a transaction that spills pages to bound its memory still
/// does.
///
/// Why that is safe, with `synchronous = full` only (the storage uses it for no other mode):
/// SQLite publishes a commit's frames to other connections by updating the WAL index after it
/// has synced them, so nothing reads those frames before the sync that writes them. A crash before
/// the sync loses frames no commit had acknowledged, as a crash between SQLite's own writes would.
/// SQLite writes a frame after the sync only to pad to a sector boundary, which it does only
/// when the files do not report `SQLITE_IOCAP_POWERSAFE_OVERWRITE` (the unix VFS reports it
/// unless the database is opened with `psow=0`): such a WAL file's writes pass through
/// ungathered. Other files (the database) are the default VFS's own.
namespace wal_gather {

/// Gathered bytes are written once they reach this much, whether or not SQLite syncs.
inline constexpr std::size_t pending_limit = 1 << 20;

/// The layer (see vfs_layer.hpp): what it does to a WAL file's writes.
struct gather {
  struct file {
    sqlite3_file base;  // must come first: SQLite sees this
    sqlite3_io_methods methods;
    sqlite3_file* real;
    bool gather;
    std::string pending;  // bytes not yet written, from `pending_at` on
    sqlite3_int64 pending_at = 0;
  };
  using layer = vfs_layer<gather>;

  /// Writes what waits; before anything that could observe the file.
  static int settle(file* f) noexcept {
    int rc = SQLITE_OK;
    for (std::size_t at = 0; at < f->pending.size() && rc == SQLITE_OK; at += 65536) {
      const std::size_t n = std::min<std::size_t>(65536, f->pending.size() - at);
      rc = f->real->pMethods->xWrite(f->real, f->pending.data() + at, static_cast<int>(n),
                                     f->pending_at + static_cast<sqlite3_int64>(at));
    }
    f->pending.clear();  // written or failed: a failed commit rewrites its frames
    return rc;
  }

  static int x_close(sqlite3_file* p) {
    file* f = layer::self(p);
    const int written = settle(f);
    const int rc = f->real->pMethods->xClose(f->real);
    f->~file();
    return written != SQLITE_OK ? written : rc;
  }
  static int x_write(sqlite3_file* p, const void* data, int n, sqlite3_int64 at) {
    file* f = layer::self(p);
    if (!f->gather) return f->real->pMethods->xWrite(f->real, data, n, at);
    if (!f->pending.empty() && at != f->pending_at + static_cast<sqlite3_int64>(f->pending.size())) {
      if (const int rc = settle(f); rc != SQLITE_OK) return rc;
    }
    try {
      if (f->pending.empty()) f->pending_at = at;
      f->pending.append(static_cast<const char*>(data), static_cast<std::size_t>(n));
    } catch (...) {  // out of memory: write what there is, then this one directly
      if (const int rc = settle(f); rc != SQLITE_OK) return rc;
      return f->real->pMethods->xWrite(f->real, data, n, at);
    }
    // A large transaction spills pages into the WAL to bound its memory: so does this.
    if (f->pending.size() >= pending_limit) return settle(f);
    return SQLITE_OK;
  }
  static int x_truncate(sqlite3_file* p, sqlite3_int64 size) {
    file* f = layer::self(p);
    if (const int rc = settle(f); rc != SQLITE_OK) return rc;
    return f->real->pMethods->xTruncate(f->real, size);
  }
  static int x_sync(sqlite3_file* p, int flags) {
    file* f = layer::self(p);
    if (const int rc = settle(f); rc != SQLITE_OK) return rc;
    return f->real->pMethods->xSync(f->real, flags);
  }
};

/// A gathering VFS and the VFS under it. SQLite calls the methods with `&vfs`, the first member.
struct layered_vfs {
  sqlite3_vfs vfs;
  sqlite3_vfs* base;
  std::string name;
};

inline int x_open(sqlite3_vfs* self_vfs, sqlite3_filename name, sqlite3_file* p, int flags, int* out_flags) {
  sqlite3_vfs* base = reinterpret_cast<layered_vfs*>(self_vfs)->base;
  if ((flags & SQLITE_OPEN_WAL) == 0) return base->xOpen(base, name, p, flags, out_flags);  // the default's own
  gather::file* f = nullptr;
  const int rc = gather::layer::open(base, name, p, flags, out_flags, f);
  if (f)
    f->gather = rc == SQLITE_OK &&
                (f->real->pMethods->xDeviceCharacteristics(f->real) & SQLITE_IOCAP_POWERSAFE_OVERWRITE) != 0;
  return rc;
}

inline constexpr const char* vfs_id = "outbox-wal-gather";

/// Registers (once, not as the default) the VFS over the VFS named `base_name` (nullptr: the
/// default VFS of that moment); its name, or nullptr if there is no such VFS or SQLite refused.
inline const char* vfs_name(const char* base_name = nullptr) {
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<layered_vfs>> registered;  // by base name; never freed
  std::lock_guard lock(mutex);
  const std::string key = base_name ? base_name : "";
  if (auto it = registered.find(key); it != registered.end()) return it->second ? it->second->name.c_str() : nullptr;
  std::unique_ptr<layered_vfs>& made = registered[key];
  sqlite3_vfs* base = sqlite3_vfs_find(base_name);
  if (base == nullptr || base->iVersion < 1) return nullptr;
  auto layered = std::make_unique<layered_vfs>();
  layered->vfs = *base;  // every other method is the base's, with its own data
  layered->base = base;
  layered->name = base_name ? std::string(vfs_id) + ":" + base_name : std::string(vfs_id);
  layered->vfs.szOsFile = gather::layer::os_file_size(*base);
  layered->vfs.pNext = nullptr;
  layered->vfs.zName = layered->name.c_str();
  layered->vfs.xOpen = x_open;
  if (sqlite3_vfs_register(&layered->vfs, 0) != SQLITE_OK) return nullptr;
  made = std::move(layered);
  return made->name.c_str();
}

}  // namespace wal_gather

}  // namespace outbox::detail::sqlite
