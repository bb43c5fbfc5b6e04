#pragma once
// A SQLite storage on a fresh file in the temp directory, removed again when it goes away.
// Default-constructible, so tests written for memory_storage run on it unchanged.

#include <outbox/storage/sqlite.hpp>

#include <atomic>
#include <filesystem>
#include <random>
#include <string>
#include <unistd.h>

namespace outbox_test {

inline std::filesystem::path temp_path(std::string_view stem) {
  static std::atomic<int> counter{0};
  return std::filesystem::temp_directory_path() /
         (std::string(stem) + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
          std::to_string(std::random_device{}()));
}

/// Deletes a database file and its WAL and shared-memory companions.
inline void remove_database(const std::filesystem::path& file) {
  std::error_code ignored;
  for (const char* suffix : {"", "-wal", "-shm", "-journal"})
    std::filesystem::remove(file.string() + suffix, ignored);
}

struct temp_file_owner {
  std::filesystem::path path;
  explicit temp_file_owner(std::filesystem::path p) : path(std::move(p)) {}
  temp_file_owner(temp_file_owner&& other) noexcept : path(std::exchange(other.path, {})) {}
  temp_file_owner& operator=(temp_file_owner&&) = delete;
  ~temp_file_owner() {
    if (!path.empty()) remove_database(path);
  }
};

class temp_sqlite_storage : private temp_file_owner, public outbox::sqlite_storage {
 public:
  temp_sqlite_storage() : temp_sqlite_storage(temp_path("outbox-test.db")) {}
  explicit temp_sqlite_storage(std::filesystem::path file, outbox::sqlite_options options = fast())
      : temp_file_owner(file), outbox::sqlite_storage(file.string(), options) {}
  temp_sqlite_storage(temp_sqlite_storage&&) noexcept = default;

  [[nodiscard]] const std::filesystem::path& file() const { return temp_file_owner::path; }

  /// Tests of behaviour need no power-loss durability; the crash and durability tests set it.
  static outbox::sqlite_options fast() {
    outbox::sqlite_options o;
    o.synchronous = outbox::sqlite_options::sync_mode::off;
    return o;
  }
};

}  // namespace outbox_test
