#pragma once
/// \file
/// A SQLite VFS file layered over another VFS's file, written once for the VFSs that watch or
/// change some of SQLite's file calls (the WAL-gathering VFS, the power-loss recorder's VFS).
///
/// The layer's file and the file of the VFS below share SQLite's allocation: ours first (SQLite
/// sees its `base`), the one below at `real_offset`. A layer is a struct with
///
///     struct file { sqlite3_file base; sqlite3_io_methods methods; sqlite3_file* real; ... };
///     static int settle(file*) noexcept;   // before a call that could observe the file
///                                          //   (read, size, unlock, file control, fetch)
///     static int x_close(sqlite3_file*), x_write(...), x_truncate(...), x_sync(...);
///
/// and `vfs_layer<Layer>` supplies everything else: the calls passed to the file below, and
/// opening a file below into the shared allocation.

#include <sqlite3.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <new>

namespace outbox::detail::sqlite {

template <class Layer>
struct vfs_layer {
  using file = typename Layer::file;

  /// Where the file below lives: after ours, aligned as SQLite aligns its allocations.
  static constexpr std::size_t real_offset = (sizeof(file) + 15) / 16 * 16;

  /// What a layered VFS's `szOsFile` must be over `below`.
  [[nodiscard]] static int os_file_size(const sqlite3_vfs& below) noexcept {
    return static_cast<int>(real_offset) + below.szOsFile;
  }

  static file* self(sqlite3_file* p) noexcept { return reinterpret_cast<file*>(p); }
  static sqlite3_file* real(sqlite3_file* p) noexcept { return self(p)->real; }

  /// Opens `name` on `below` and builds our file over it in `p`; `made` is that file (null when
  /// the VFS below opened nothing, which leaves nothing to close).
  static int open(sqlite3_vfs* below, sqlite3_filename name, sqlite3_file* p, int flags, int* out_flags,
                  file*& made) {
    auto* inner = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(p) + real_offset);
    std::memset(inner, 0, static_cast<std::size_t>(below->szOsFile));
    const int rc = below->xOpen(below, name, inner, flags, out_flags);
    made = nullptr;
    if (inner->pMethods == nullptr) {
      p->pMethods = nullptr;
      return rc;
    }
    made = new (p) file{};
    made->real = inner;
    const sqlite3_io_methods& r = *inner->pMethods;
    made->methods = sqlite3_io_methods{
        std::min(r.iVersion, 3), Layer::x_close, x_read, Layer::x_write, Layer::x_truncate, Layer::x_sync,
        x_file_size, x_lock, x_unlock, x_check_reserved_lock, x_file_control, x_sector_size,
        x_device_characteristics, r.iVersion >= 2 ? x_shm_map : nullptr, r.iVersion >= 2 ? x_shm_lock : nullptr,
        r.iVersion >= 2 ? x_shm_barrier : nullptr, r.iVersion >= 2 ? x_shm_unmap : nullptr,
        r.iVersion >= 3 ? x_fetch : nullptr, r.iVersion >= 3 ? x_unfetch : nullptr};
    made->base.pMethods = &made->methods;
    return rc;
  }

  static int x_read(sqlite3_file* p, void* out, int n, sqlite3_int64 at) {
    if (const int rc = Layer::settle(self(p)); rc != SQLITE_OK) return rc;
    return real(p)->pMethods->xRead(real(p), out, n, at);
  }
  static int x_file_size(sqlite3_file* p, sqlite3_int64* size) {
    if (const int rc = Layer::settle(self(p)); rc != SQLITE_OK) return rc;
    return real(p)->pMethods->xFileSize(real(p), size);
  }
  static int x_lock(sqlite3_file* p, int level) { return real(p)->pMethods->xLock(real(p), level); }
  static int x_unlock(sqlite3_file* p, int level) {
    if (const int rc = Layer::settle(self(p)); rc != SQLITE_OK) return rc;
    return real(p)->pMethods->xUnlock(real(p), level);
  }
  static int x_check_reserved_lock(sqlite3_file* p, int* out) {
    return real(p)->pMethods->xCheckReservedLock(real(p), out);
  }
  static int x_file_control(sqlite3_file* p, int op, void* arg) {
    if (const int rc = Layer::settle(self(p)); rc != SQLITE_OK) return rc;
    return real(p)->pMethods->xFileControl(real(p), op, arg);
  }
  static int x_sector_size(sqlite3_file* p) { return real(p)->pMethods->xSectorSize(real(p)); }
  static int x_device_characteristics(sqlite3_file* p) { return real(p)->pMethods->xDeviceCharacteristics(real(p)); }
  static int x_shm_map(sqlite3_file* p, int region, int size, int extend, void volatile** out) {
    return real(p)->pMethods->xShmMap(real(p), region, size, extend, out);
  }
  static int x_shm_lock(sqlite3_file* p, int offset, int n, int flags) {
    return real(p)->pMethods->xShmLock(real(p), offset, n, flags);
  }
  static void x_shm_barrier(sqlite3_file* p) { real(p)->pMethods->xShmBarrier(real(p)); }
  static int x_shm_unmap(sqlite3_file* p, int remove) { return real(p)->pMethods->xShmUnmap(real(p), remove); }
  static int x_fetch(sqlite3_file* p, sqlite3_int64 at, int n, void** out) {
    if (const int rc = Layer::settle(self(p)); rc != SQLITE_OK) return rc;
    return real(p)->pMethods->xFetch(real(p), at, n, out);
  }
  static int x_unfetch(sqlite3_file* p, sqlite3_int64 at, void* mapped) {
    return real(p)->pMethods->xUnfetch(real(p), at, mapped);
  }
};

}  // namespace outbox::detail::sqlite
