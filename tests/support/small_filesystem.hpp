#pragma once
// A real, small file system for disk-full tests: a tmpfs of a given size mounted on a fresh
// directory, unmounted and removed again when it goes away. Writes past its size fail in the
// kernel with ENOSPC, exactly as on a full disk (tmpfs makes `fsync` free, which these tests do
// not measure).
//
// Mounting needs CAP_SYS_ADMIN, which root has where the test command and CI run. Without it,
// `mounted()` is false and `have_small_filesystem` warns that the test checks nothing; with it,
// a mount that fails is a test failure, not a skip.

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
  /// Whether this process may mount (CAP_SYS_ADMIN in its effective set, as root has outside a
  /// restricted container): then a failed mount is a failure, not a reason to check nothing.
  [[nodiscard]] static bool must_mount() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("CapEff:", 0) != 0) continue;
      const unsigned long long caps = std::stoull(line.substr(7), nullptr, 16);
      constexpr int cap_sys_admin = 21;
      return (caps >> cap_sys_admin & 1U) != 0;
    }
    return ::geteuid() == 0;
  }
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

/// True when the test can go on; without the right to mount, warns that it checks nothing.
inline bool have_small_filesystem(const small_filesystem& fs) {
  if (fs.mounted()) return true;
  REQUIRE_FALSE(small_filesystem::must_mount());  // a process that may mount must get its tmpfs
  WARN("may not mount, so no tmpfs to fill (" << fs.why_not() << "): this test checks nothing");
  return false;
}

}  // namespace outbox_test
