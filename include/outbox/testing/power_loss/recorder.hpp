#pragma once
/// \file
/// The power-loss simulator's recorder (testing/power_loss.hpp): the trace of what a storage did
/// to its files, the states a power cut at any point of it may leave, and the file storage's I/O
/// layers that feed it.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>

#include <outbox/outbox.hpp>  // the single header provides it too, and file_io.hpp's posix_io
#if __has_include(<outbox/detail/file_io.hpp>)
#include <outbox/detail/file_io.hpp>
#endif

namespace outbox::testing::power_loss {

/// What a cut keeps of what was not synced.
enum class persistence : std::uint8_t {
  none,    ///< nothing: every unsynced write, truncation and directory entry is lost
  all,     ///< everything, as a process crash would
  chosen,  ///< each one kept, dropped or (writes) torn at sector boundaries, at random
};

[[nodiscard]] constexpr std::string_view to_string(persistence p) noexcept {
  return p == persistence::none ? "none kept" : p == persistence::all ? "all kept" : "chosen";
}

/// Files by path (relative to the recorder's root) and content.
using disk_state = std::map<std::string, std::string>;

/// The trace of what a storage did to the files under one directory, and the states a power
/// cut at any point of it may leave. Thread-safe.
class recorder {
 public:
  /// A sector: the unit a torn write keeps or loses.
  static constexpr std::uint64_t sector_bytes = 512;

  /// Records under `root`, whose files (if any) count as synced.
  explicit recorder(const std::filesystem::path& root) : root_(std::filesystem::absolute(root).lexically_normal()) {
    std::error_code ec;
    if (!std::filesystem::exists(root_, ec)) return;
    for (const auto& file : std::filesystem::recursive_directory_iterator(root_, ec)) {
      if (!file.is_regular_file()) continue;
      std::ifstream in(file.path(), std::ios::binary);
      std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      const int node = static_cast<int>(initial_.size());
      initial_.push_back(std::move(bytes));
      const std::string name = relative(file.path()).value_or("");
      initial_names_[name] = node;
      names_[name] = node;
    }
    next_node_ = static_cast<int>(initial_.size());
  }

  [[nodiscard]] const std::filesystem::path& root() const noexcept { return root_; }

  // ---- recording ---------------------------------------------------------------------------

  /// A file opened (created if it did not exist, emptied if `truncated`): its handle for the
  /// calls below, or -1 if it lies outside the root.
  int opened(const std::filesystem::path& path, bool truncated) {
    std::lock_guard lock(mutex_);
    const auto name = relative(path);
    if (!name) return -1;
    auto it = names_.find(*name);
    if (it == names_.end()) {
      const int node = next_node_++;
      names_[*name] = node;
      trace_.push_back({kind::create, node, 0, {}, *name, {}});
      return node;
    }
    if (truncated) trace_.push_back({kind::truncate, it->second, 0, {}, {}, {}});
    return it->second;
  }
  void wrote(int handle, std::uint64_t offset, std::string_view bytes) {
    if (handle < 0 || bytes.empty()) return;
    std::lock_guard lock(mutex_);
    trace_.push_back({kind::write, handle, offset, std::string(bytes), {}, {}});
  }
  void truncated(int handle, std::uint64_t size) {
    if (handle < 0) return;
    std::lock_guard lock(mutex_);
    trace_.push_back({kind::truncate, handle, size, {}, {}, {}});
  }
  /// `fsync` or `fdatasync` of a file: its content and size are on disk.
  void synced(int handle) {
    if (handle < 0) return;
    std::lock_guard lock(mutex_);
    if (file_syncs_++ == drop_file_sync_) return;
    trace_.push_back({kind::sync, handle, 0, {}, {}, {}});
  }
  /// `fsync` of a directory: its entries are on disk.
  void synced_directory(const std::filesystem::path& dir) {
    std::lock_guard lock(mutex_);
    const auto name = relative(dir);
    if (!name) return;
    if (directory_syncs_++ == drop_directory_sync_) return;
    trace_.push_back({kind::directory_sync, -1, 0, {}, *name, {}});
  }
  void renamed(const std::filesystem::path& from, const std::filesystem::path& to) {
    std::lock_guard lock(mutex_);
    const auto a = relative(from), b = relative(to);
    if (!a || !b) return;
    auto it = names_.find(*a);
    if (it == names_.end()) return;
    names_[*b] = it->second;
    names_.erase(*a);
    trace_.push_back({kind::rename, -1, 0, {}, *a, *b});
  }
  void unlinked(const std::filesystem::path& path) {
    std::lock_guard lock(mutex_);
    const auto name = relative(path);
    if (!name || names_.erase(*name) == 0) return;
    trace_.push_back({kind::unlink, -1, 0, {}, *name, {}});
  }

  /// File descriptors of the POSIX layer: which handle (or directory) each stands for.
  void bind(int fd, int handle, std::optional<std::filesystem::path> directory) {
    std::lock_guard lock(mutex_);
    fds_[fd] = {handle, std::move(directory)};
  }
  [[nodiscard]] std::pair<int, std::optional<std::filesystem::path>> bound(int fd) const {
    std::lock_guard lock(mutex_);
    auto it = fds_.find(fd);
    if (it == fds_.end()) return {-1, std::nullopt};
    return it->second;
  }

  // ---- faults ------------------------------------------------------------------------------

  /// Leaves the `n`th file sync from now on (0: the next) out of the trace, as if the storage
  /// had never made it: a check over the trace must then find what it lost.
  void drop_file_sync(std::size_t n) {
    std::lock_guard lock(mutex_);
    drop_file_sync_ = file_syncs_ + n;
  }
  /// The same for the `n`th directory sync from now on.
  void drop_directory_sync(std::size_t n) {
    std::lock_guard lock(mutex_);
    drop_directory_sync_ = directory_syncs_ + n;
  }

  // ---- cuts --------------------------------------------------------------------------------

  /// How many calls the trace holds: the cut points are 0 (before the first) to size().
  [[nodiscard]] std::size_t size() const {
    std::lock_guard lock(mutex_);
    return trace_.size();
  }
  /// Where the last file sync before `cut` is in the trace (0 if none).
  [[nodiscard]] std::size_t last_sync_before(std::size_t cut) const {
    std::lock_guard lock(mutex_);
    for (std::size_t i = std::min(cut, trace_.size()); i-- > 0;)
      if (trace_[i].what == kind::sync) return i + 1;
    return 0;
  }

  /// A state the files may be in after a power cut once the first `cut` calls were made.
  [[nodiscard]] disk_state state_at(std::size_t cut, persistence keep, std::mt19937_64& random) const {
    std::lock_guard lock(mutex_);
    cut = std::min(cut, trace_.size());
    struct node {
      std::string synced;
      std::vector<const entry*> unsynced;
    };
    std::vector<node> nodes(static_cast<std::size_t>(next_node_));
    for (std::size_t i = 0; i < initial_.size(); ++i) nodes[i].synced = initial_[i];
    std::map<std::string, int> names = initial_names_;  // the directory entries on disk
    std::vector<const entry*> entries;                   // changes to them since their directory's sync
    for (std::size_t i = 0; i < cut; ++i) {
      const entry& e = trace_[i];
      switch (e.what) {
        case kind::create:
        case kind::rename:
        case kind::unlink:
          entries.push_back(&e);
          break;
        case kind::write:
        case kind::truncate:
          nodes[static_cast<std::size_t>(e.node)].unsynced.push_back(&e);
          break;
        case kind::sync: {
          node& n = nodes[static_cast<std::size_t>(e.node)];
          for (const entry* change : n.unsynced) apply(n.synced, *change);
          n.unsynced.clear();
          break;
        }
        case kind::directory_sync: {
          std::vector<const entry*> rest;
          for (const entry* change : entries) {
            if (parent(change->path) == e.path || (change->what == kind::rename && parent(change->to) == e.path))
              link(names, *change);
            else
              rest.push_back(change);
          }
          entries = std::move(rest);
          break;
        }
      }
    }
    auto kept = [&](int one_in) {
      if (keep == persistence::none) return false;
      if (keep == persistence::all) return true;
      return random() % static_cast<std::uint64_t>(one_in) != 0;
    };
    for (const entry* change : entries)
      if (kept(2)) link(names, *change);
    disk_state state;
    for (const auto& [name, id] : names) {
      node& n = nodes[static_cast<std::size_t>(id)];
      std::string content = n.synced;
      for (const entry* change : n.unsynced) {
        if (keep != persistence::chosen) {
          if (keep == persistence::all) apply(content, *change);
          continue;
        }
        const auto choice = random() % 3;  // dropped, kept, torn
        if (choice == 0) continue;
        if (choice == 1 || change->what == kind::truncate) {
          apply(content, *change);
          continue;
        }
        for (std::uint64_t at = change->offset / sector_bytes * sector_bytes; at < change->offset + change->data.size();
             at += sector_bytes) {
          if (random() % 2 == 0) continue;
          const std::uint64_t from = std::max(at, change->offset);
          const std::uint64_t to = std::min<std::uint64_t>(at + sector_bytes, change->offset + change->data.size());
          if (content.size() < to) content.resize(static_cast<std::size_t>(to), '\0');
          content.replace(static_cast<std::size_t>(from), static_cast<std::size_t>(to - from),
                          change->data, static_cast<std::size_t>(from - change->offset), static_cast<std::size_t>(to - from));
        }
      }
      state.emplace(name, std::move(content));
    }
    return state;
  }

  /// Writes `state` into `dir` (created; emptied first).
  static void write(const disk_state& state, const std::filesystem::path& dir) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    for (const auto& [name, content] : state) {
      const auto path = dir / name;
      std::filesystem::create_directories(path.parent_path());
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(content.data(), static_cast<std::streamsize>(content.size()));
    }
  }

 private:
  enum class kind : std::uint8_t { create, write, truncate, sync, directory_sync, rename, unlink };
  struct entry {
    kind what;
    int node;
    std::uint64_t offset;  // write: where; truncate: the new size
    std::string data;
    std::string path;      // create, unlink, rename (from), directory_sync (the directory)
    std::string to;        // rename
  };

  static void apply(std::string& content, const entry& e) {
    if (e.what == kind::truncate) {
      content.resize(static_cast<std::size_t>(e.offset), '\0');
      return;
    }
    const std::size_t end = static_cast<std::size_t>(e.offset) + e.data.size();
    if (content.size() < end) content.resize(end, '\0');
    content.replace(static_cast<std::size_t>(e.offset), e.data.size(), e.data);
  }
  static void link(std::map<std::string, int>& names, const entry& e) {
    if (e.what == kind::create) {
      names[e.path] = e.node;
    } else if (e.what == kind::unlink) {
      names.erase(e.path);
    } else if (auto it = names.find(e.path); it != names.end()) {  // a rename of a name on disk
      const int id = it->second;
      names.erase(it);
      names[e.to] = id;
    }
  }
  static std::string parent(const std::string& name) {
    const auto slash = name.rfind('/');
    return slash == std::string::npos ? std::string() : name.substr(0, slash);
  }
  /// `path` relative to the root ("" for the root itself), or nullopt outside it.
  [[nodiscard]] std::optional<std::string> relative(const std::filesystem::path& path) const {
    const auto rel = std::filesystem::absolute(path).lexically_normal().lexically_relative(root_);
    if (rel.empty()) return std::nullopt;
    std::string name = rel.generic_string();
    if (name == ".") return std::string();
    if (name.size() >= 2 && name.compare(0, 2, "..") == 0) return std::nullopt;
    if (!name.empty() && name.back() == '/') name.pop_back();
    return name;
  }

  std::filesystem::path root_;
  mutable std::mutex mutex_;
  std::vector<std::string> initial_;
  std::map<std::string, int> initial_names_;
  std::map<std::string, int> names_;  // as the storage sees them now
  int next_node_ = 0;
  std::vector<entry> trace_;
  std::map<int, std::pair<int, std::optional<std::filesystem::path>>> fds_;
  std::size_t file_syncs_ = 0, directory_syncs_ = 0;
  std::size_t drop_file_sync_ = static_cast<std::size_t>(-1), drop_directory_sync_ = static_cast<std::size_t>(-1);
};

/// The system's calls, but syncs only pretend: for a storage whose files need not survive a
/// real power cut (the recorded run, the states a check reopens), so a check costs no disk
/// flushes.
struct unsynced_io : detail::file::posix_io {
  int fdatasync(int) const noexcept { return 0; }
  int fsync(int) const noexcept { return 0; }
};

/// The file storage's I/O layer (detail/file_io.hpp) that makes each call and tells `rec`:
///
///     outbox::testing::power_loss::recorder rec(dir);
///     auto s = outbox::basic_file_storage<recording_io>::open(dir, options, recording_io{&rec});
///
/// Its syncs are recorded, not made (the recorder says what they would have kept).
struct recording_io {
  recorder* rec = nullptr;
  unsynced_io system{};

  int open(const char* path, int flags, unsigned mode = 0) const {
    const int fd = system.open(path, flags, mode);
    if (fd < 0) return fd;
    if (flags & O_DIRECTORY) {
      rec->bind(fd, -1, std::filesystem::path(path));
    } else {
      rec->bind(fd, rec->opened(path, (flags & O_TRUNC) != 0), std::nullopt);
    }
    return fd;
  }
  long long pwrite(int fd, const void* data, std::size_t n, std::uint64_t offset) const {
    const long long done = system.pwrite(fd, data, n, offset);
    if (done > 0) rec->wrote(rec->bound(fd).first, offset, std::string_view(static_cast<const char*>(data), static_cast<std::size_t>(done)));
    return done;
  }
  long long read(int fd, void* out, std::size_t n) const { return system.read(fd, out, n); }
  int fstat(int fd, struct stat* out) const { return system.fstat(fd, out); }
  int fdatasync(int fd) const { return sync(fd, system.fdatasync(fd)); }
  int fsync(int fd) const { return sync(fd, system.fsync(fd)); }
  int ftruncate(int fd, std::uint64_t size) const {
    const int rc = system.ftruncate(fd, size);
    if (rc == 0) rec->truncated(rec->bound(fd).first, size);
    return rc;
  }
  int rename(const char* from, const char* to) const {
    const int rc = system.rename(from, to);
    if (rc == 0) rec->renamed(from, to);
    return rc;
  }
  int unlink(const char* path) const {
    const int rc = system.unlink(path);
    if (rc == 0) rec->unlinked(path);
    return rc;
  }

 private:
  int sync(int fd, int rc) const {
    if (rc != 0) return rc;
    const auto [handle, directory] = rec->bound(fd);
    if (directory)
      rec->synced_directory(*directory);
    else
      rec->synced(handle);
    return rc;
  }
};

}  // namespace outbox::testing::power_loss
