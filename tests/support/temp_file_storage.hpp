#pragma once
// A file storage in a fresh temp directory, removed again when it goes away. Default-
// constructible, so tests written for memory_storage run on it unchanged.

#include <outbox/storage/file.hpp>

#include <filesystem>

#include "support/temp_sqlite.hpp"  // temp_path

namespace outbox_test {

struct temp_dir_owner {
  std::filesystem::path path;
  explicit temp_dir_owner(std::filesystem::path p) : path(std::move(p)) {}
  temp_dir_owner(temp_dir_owner&& other) noexcept : path(std::exchange(other.path, {})) {}
  temp_dir_owner& operator=(temp_dir_owner&&) = delete;
  ~temp_dir_owner() {
    std::error_code ignored;
    if (!path.empty()) std::filesystem::remove_all(path, ignored);
  }
};

class temp_file_storage : private temp_dir_owner, public outbox::file_storage {
 public:
  temp_file_storage() : temp_file_storage(temp_path("outbox-test-dir")) {}
  explicit temp_file_storage(std::filesystem::path dir, outbox::file_options options = fast())
      : temp_dir_owner(dir), outbox::file_storage(dir, options) {}
  temp_file_storage(temp_file_storage&&) noexcept = default;

  /// Behaviour tests need no power-loss durability; the durability tests ask for it.
  static outbox::file_options fast() {
    outbox::file_options o;
    o.sync = outbox::file_options::sync_policy::none;
    return o;
  }
};

}  // namespace outbox_test
