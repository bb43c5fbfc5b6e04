#pragma once
/// \file
/// The file storage's I/O layer: every system call through which `file_storage` reads, writes,
/// syncs, renames, truncates or removes its files goes through one object of this shape, a
/// policy of `basic_file_storage`. `posix_io` (the default) is the system itself, each member an
/// inline call; the test kit's power-loss simulator (testing/power_loss.hpp) records them to
/// build the states a power cut could leave.
///
/// A layer provides, with the system calls' meaning (-1 and errno on failure):
///
///     int open(const char* path, int flags, unsigned mode);   // O_DIRECTORY for a directory
///     long long pwrite(int fd, const void* data, std::size_t n, std::uint64_t offset);
///     long long read(int fd, void* out, std::size_t n);
///     int fstat(int fd, struct stat* out);
///     int fdatasync(int fd);
///     int fsync(int fd);                                       // also a directory's
///     int ftruncate(int fd, std::uint64_t size);
///     int rename(const char* from, const char* to);
///     int unlink(const char* path);
///
/// Closing stays `::close` (detail::file::fd): it changes nothing on disk.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>  // ::rename

namespace outbox::detail::file {

/// The real system calls.
struct posix_io {
  int open(const char* path, int flags, unsigned mode = 0) const noexcept {
    return ::open(path, flags, static_cast<mode_t>(mode));
  }
  long long pwrite(int fd, const void* data, std::size_t n, std::uint64_t offset) const noexcept {
    return ::pwrite(fd, data, n, static_cast<off_t>(offset));
  }
  long long read(int fd, void* out, std::size_t n) const noexcept { return ::read(fd, out, n); }
  int fstat(int fd, struct stat* out) const noexcept { return ::fstat(fd, out); }
  int fdatasync(int fd) const noexcept { return ::fdatasync(fd); }
  int fsync(int fd) const noexcept { return ::fsync(fd); }
  int ftruncate(int fd, std::uint64_t size) const noexcept { return ::ftruncate(fd, static_cast<off_t>(size)); }
  int rename(const char* from, const char* to) const noexcept { return ::rename(from, to); }
  int unlink(const char* path) const noexcept { return ::unlink(path); }
};

}  // namespace outbox::detail::file
