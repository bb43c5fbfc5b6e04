#pragma once
// A real, small file system for disk-full tests: a tmpfs of a given size mounted on a fresh
// directory, unmounted and removed again when it goes away. Writes past its size fail in the
// kernel with ENOSPC, exactly as on a full disk (tmpfs makes `fsync` free, which these tests do
// not measure).
//
// Mounting needs root (CAP_SYS_ADMIN), which the test command and CI have. Run as another user,
// `mounted()` is false and `have_small_filesystem` warns that the test checks nothing; run as
// root, a mount that fails is a test failure, not a skip.

#include <catch2/catch.hpp>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include "support/temp_sqlite.hpp"  // temp_path

namespace outbox_test {

class small_filesystem {
 public:
  explicit small_filesystem(std::uint64_t bytes) : dir_(temp_path("outbox-small-fs")) {
    std::filesystem::create_directories(dir_);
    const std::string options = "size=" + std::to_string(bytes) + ",mode=0700";
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) == 0) {
      mounted_ = true;
    } else {
      why_ = std::strerror(errno);
    }
  }
  small_filesystem(const small_filesystem&) = delete;
  small_filesystem& operator=(const small_filesystem&) = delete;
  ~small_filesystem() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  [[nodiscard]] bool mounted() const noexcept { return mounted_; }
  /// Root may mount; anyone else is told why the test checks nothing.
  [[nodiscard]] static bool must_mount() { return ::geteuid() == 0; }
  [[nodiscard]] const std::string& why_not() const noexcept { return why_; }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return dir_; }

  /// Bytes still free on it.
  [[nodiscard]] std::uint64_t free_bytes() const { return std::filesystem::space(dir_).available; }

  /// Fills all but `leave` bytes of it with a file named `name` (rounded down to whole pages).
  void fill_leaving(const std::string& name, std::uint64_t leave) const {
    const std::uint64_t free = free_bytes();
    const std::uint64_t size = free > leave ? (free - leave) / 4096 * 4096 : 0;
    std::ofstream out(dir_ / name, std::ios::binary);
    const std::string block(4096, 'f');
    for (std::uint64_t done = 0; done < size; done += block.size()) out.write(block.data(), block.size());
  }

 private:
  std::filesystem::path dir_;
  bool mounted_ = false;
  std::string why_;
};

/// True when the test can go on; run as another user than root, warns that it checks nothing.
inline bool have_small_filesystem(const small_filesystem& fs) {
  if (fs.mounted()) return true;
  REQUIRE_FALSE(small_filesystem::must_mount());  // root must get its tmpfs
  WARN("not root, so no tmpfs to fill (" << fs.why_not() << "): this test checks nothing");
  return false;
}

}  // namespace outbox_test
