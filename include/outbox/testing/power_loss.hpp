#pragma once
/// \file
/// A power-loss simulator: what a storage's files may hold after the power goes, and a check
/// that the storage, reopened from each such state, still holds everything it acknowledged.
///
/// A process crash (`kill -9`) keeps every byte handed to `write()`: it is in the page cache.
/// A power cut keeps only what was synced, and of the rest any part, in any order. The
/// `recorder` is told every write, truncation, sync, rename, unlink and directory sync a storage
/// makes under a directory (through `recording_io`, the file storage's I/O layer, or a VFS for
/// SQLite: testing/power_loss_sqlite.hpp), and builds from that trace, at any point of it, a
/// state a POSIX file system may leave:
///
/// - a file's content as of its last `fsync`/`fdatasync` is kept;
/// - each write since is dropped, kept, or torn: kept in some of its 512-byte sectors only
///   (a write past the end that is lost leaves zeros if a later byte made it);
/// - a truncation since the last sync is kept or not;
/// - creates, renames and unlinks since the last sync of their directory each persist or not
///   (a rename is atomic: the name points at the old file or the new one).
///
/// `check` runs a workload of saves (an entity and its event in one write), claims, outcomes,
/// compactions and purges on a storage opened over a recorder, keeps the state after each
/// acknowledged call, then cuts the trace at random points, writes each cut's state to a fresh
/// directory, reopens the storage there and compares. Nothing here depends on a test framework.

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

// ---- the check ---------------------------------------------------------------------------------

/// How `check` runs.
struct check_options {
  std::size_t operations = 150;  ///< calls of the workload (the open is one more)
  std::size_t cuts = 100;        ///< power cuts at random points of its trace (and one after each call)
  std::uint64_t seed = 1;
  /// true: every acknowledged call survives (a storage that syncs each commit). false: a cut
  /// may lose the calls acknowledged after the last file sync before it, but the state must
  /// still be one the calls passed through (a storage that syncs at checkpoints only).
  bool acknowledged_is_durable = true;
  std::string collection = "steps";
};

/// What `check` found.
struct check_report {
  std::size_t operations = 0;  ///< acknowledged calls, the open included
  std::size_t trace_calls = 0;
  std::size_t cuts = 0;  ///< all of them: after each call, and at random points
  std::size_t random_cuts = 0;
  std::size_t failed_cuts = 0;
  std::size_t lost_acknowledged = 0;  ///< cuts that lost an acknowledged save or outcome
  std::vector<std::string> problems;  ///< the first few, each naming its cut
  [[nodiscard]] bool ok() const noexcept { return failed_cuts == 0 && operations > 0; }
};

namespace detail_check {

inline std::string describe(const event& e) {
  std::ostringstream out;
  auto t = [](timestamp at) { return std::chrono::duration_cast<std::chrono::microseconds>(at.time_since_epoch()).count(); };
  out << e.id.to_string() << " seq=" << e.seq << " " << to_string(e.status) << " attempts=" << e.attempts << "/"
      << e.max_attempts << " type=" << e.type << " entity=" << e.entity_type << "/" << e.entity_id << " key=" << e.ordering_key
      << " user=" << e.user_id << " prio=" << e.priority << " payload=" << e.payload << " created=" << t(e.created_at)
      << " updated=" << t(e.updated_at) << " retry=" << t(e.retry_after) << " completed=" << t(e.completed_at)
      << " error=" << e.last_error << " remote=" << e.remote_id << " lease=" << e.lease << " until=" << t(e.lease_until);
  return out.str();
}
inline std::string describe(const entity_record& r) {
  std::ostringstream out;
  auto t = [](timestamp at) { return std::chrono::duration_cast<std::chrono::microseconds>(at.time_since_epoch()).count(); };
  out << "v" << r.version << " user=" << r.user_id << " key=" << r.natural_key << " payload=" << r.payload
      << " occurred=" << t(r.occurred_at) << " sync=" << to_string(r.sync) << " remote=" << r.remote_id
      << " error=" << r.sync_error << " last=" << r.last_event.to_string() << " created=" << t(r.created_at)
      << " updated=" << t(r.updated_at);
  return out.str();
}

/// A storage's whole state, as its reads return it.
struct snapshot {
  std::map<std::string, std::string> events;    // id -> description
  std::map<std::string, status> statuses;       // id -> status
  std::map<std::string, std::string> entities;  // id -> description
  std::map<std::string, std::string> last_events;  // entity id -> its last event's id
  bool operator==(const snapshot& other) const { return events == other.events && entities == other.entities; }
};

/// A save of `row` (new when its version is 0) by alice, with its event, as a repository makes it.
inline entity_change save(entity_record row, event_id id, timestamp now, std::string payload) {
  entity_change c;
  const bool update = row.version != 0;
  c.expected_version = row.version;
  c.entity = std::move(row);
  c.entity.user_id = "alice";
  if (!update) c.entity.occurred_at = c.entity.created_at = now;
  c.entity.updated_at = now;
  c.entity.payload = std::move(payload);
  c.event.id = id;
  c.event.type = c.entity.collection + (update ? ".updated" : ".created");
  c.event.entity_type = c.entity.collection;
  c.event.entity_id = c.entity.id;
  c.event.ordering_key = c.entity.collection + "/" + c.entity.id;
  c.event.user_id = "alice";
  c.event.payload = c.entity.payload;
  c.event.max_attempts = 3;
  c.event.created_at = now;
  c.event.updated_at = now;
  c.entity.last_event = c.event.id;
  return c;
}

template <class Storage>
result<snapshot> read_all(Storage& s, const std::string& collection) {
  snapshot out;
  event_query q;
  q.limit = 1'000'000;
  auto events = s.query(q);
  if (!events) return events.error();
  for (const event& e : *events) {
    out.events[e.id.to_string()] = describe(e);
    out.statuses[e.id.to_string()] = e.status;
  }
  entity_query eq;
  eq.collection = collection;
  eq.limit = 1'000'000;
  auto rows = s.query_entities(eq);
  if (!rows) return rows.error();
  for (const entity_record& r : *rows) {
    out.entities[r.id] = describe(r);
    out.last_events[r.id] = r.last_event.to_string();
  }
  return out;
}

}  // namespace detail_check

/// Runs the workload on the storage `open_recording(dir, rec)` opens over a recorder of `dir`,
/// then reopens `reopen(cut_dir)` from `options.cuts` states a power cut could leave and checks
/// each against the states the acknowledged calls passed through. `compact(storage)` is the
/// storage's maintenance (a compaction, a checkpoint). `work` is emptied and used throughout.
template <class OpenRecording, class Reopen, class Compact>
check_report check(const std::filesystem::path& work, OpenRecording open_recording, Reopen reopen, Compact compact,
                   const check_options& options = {}, std::function<void(recorder&)> before = {}) {
  using detail_check::snapshot;
  check_report report;
  std::filesystem::remove_all(work);
  const auto live = work / "live";
  std::filesystem::create_directories(live);
  recorder rec(live);
  if (before) before(rec);
  std::mt19937_64 random(options.seed);
  auto problem = [&](std::string text) {
    if (report.problems.size() < 8) report.problems.push_back(std::move(text));
  };

  // ---- the workload: states[j] is the state once call j (0: the open) was acknowledged
  std::vector<snapshot> states;
  std::vector<std::size_t> started, acknowledged;
  {
    started.push_back(rec.size());
    auto storage = open_recording(live, rec);
    if (!storage) {
      problem("opening the recorded storage failed: " + storage.error().message);
      return report;
    }
    // Keeps the state once a call was acknowledged; false if it cannot be read.
    auto keep_state = [&](auto& opened) {
      acknowledged.push_back(rec.size());
      auto now_state = detail_check::read_all(opened, options.collection);
      if (!now_state) problem("reading failed: " + now_state.error().message);
      else states.push_back(*now_state);
      return now_state.has_value();
    };
    if (!keep_state(*storage)) return report;

    const timestamp t0 = timestamp(std::chrono::seconds(1767225600));
    event_id_generator ids{options.seed};
    std::vector<event> claimed;
    std::vector<entity_record> rows;
    for (std::size_t i = 0; i < options.operations; ++i) {
      const timestamp now = t0 + std::chrono::seconds(static_cast<long long>(i));
      const auto dice = random() % 100;
      started.push_back(rec.size());
      std::string failed;
      if (dice < 45 || rows.empty()) {  // a save: a new entity, or the next version of one
        const bool update = dice % 3 == 0 && !rows.empty();
        entity_record row;
        if (update) {
          row = rows[static_cast<std::size_t>(random() % rows.size())];
        } else {
          row.collection = options.collection;
          row.id = "e" + std::to_string(i);
          row.natural_key = "alice/" + std::to_string(i);
        }
        const entity_change c = detail_check::save(std::move(row), ids.next(now), now, R"({"v":)" + std::to_string(i) + "}");
        if (auto done = storage->commit(c); !done) failed = "save: " + done.error().message;
      } else if (dice < 65) {
        std::vector<event> out;
        auto done = storage->claim(claim_request{"alice", now, now + std::chrono::seconds(30), 1 + random() % 4}, out);
        if (!done) failed = "claim: " + done.error().message;
        claimed.insert(claimed.end(), out.begin(), out.end());
      } else if (dice < 88) {
        std::vector<outcome> outcomes;
        const std::size_t n = std::min<std::size_t>(claimed.size(), 1 + random() % 3);
        for (std::size_t k = 0; k < n; ++k) {
          const event& e = claimed[k];
          const auto answer = random() % 10;
          if (answer < 6)
            outcomes.push_back(outbox::detail::lifecycle::delivered(e, now, "remote-" + e.id.to_string()));
          else
            outcomes.push_back(outbox::detail::lifecycle::failed(e, now, "503", answer == 9, now + std::chrono::seconds(5)));
        }
        claimed.erase(claimed.begin(), claimed.begin() + static_cast<std::ptrdiff_t>(n));
        if (auto done = storage->record(std::span<outcome>(outcomes)); !done) failed = "record: " + done.error().message;
      } else if (dice < 94) {
        if (auto done = storage->purge_completed(now - std::chrono::seconds(10)); !done) failed = "purge: " + done.error().message;
      } else {
        if (auto done = compact(*storage); !done) failed = "compaction: " + done.error().message;
      }
      if (!failed.empty()) {
        problem("the recorded workload's call " + std::to_string(i + 1) + " failed: " + failed);
        return report;
      }
      if (!keep_state(*storage)) return report;
      // The rows as stored now, for the next updates.
      rows.clear();
      entity_query eq;
      eq.collection = options.collection;
      eq.limit = 1'000'000;
      if (auto all = storage->query_entities(eq)) rows = *all;
    }
  }
  report.operations = states.size();
  report.trace_calls = rec.size();

  // ---- the cuts
  // Right after each acknowledgement with nothing unsynced kept: where a missing sync shows.
  // Then `options.cuts` random points.
  std::vector<std::pair<std::size_t, persistence>> cuts;
  for (std::size_t j = 0; j < acknowledged.size(); ++j)
    if (j == 0 || acknowledged[j] != acknowledged[j - 1]) cuts.emplace_back(acknowledged[j], persistence::none);
  for (std::size_t n = 0; n < options.cuts; ++n)
    cuts.emplace_back(static_cast<std::size_t>(random() % (report.trace_calls + 1)),
                      n % 4 == 0 ? persistence::none : n % 4 == 1 ? persistence::all : persistence::chosen);
  report.random_cuts = options.cuts;
  const snapshot empty;
  for (std::size_t n = 0; n < cuts.size(); ++n) {
    const auto [cut, keep] = cuts[n];
    const std::string where = "cut " + std::to_string(n) + " at call " + std::to_string(cut) + "/" +
                              std::to_string(report.trace_calls) + " (" + std::string(to_string(keep)) + ")";
    ++report.cuts;
    // The calls acknowledged before the cut, and the one in flight at it.
    std::ptrdiff_t acked = -1, last_started = -1;
    const std::size_t durable_mark = options.acknowledged_is_durable ? cut : rec.last_sync_before(cut);
    std::ptrdiff_t floor = -1;
    for (std::size_t j = 0; j < states.size(); ++j) {
      if (acknowledged[j] <= cut) acked = static_cast<std::ptrdiff_t>(j);
      if (acknowledged[j] <= durable_mark) floor = static_cast<std::ptrdiff_t>(j);
      if (started[j] < cut || acknowledged[j] <= cut) last_started = static_cast<std::ptrdiff_t>(j);
    }
    const std::ptrdiff_t lowest = options.acknowledged_is_durable ? acked : floor;
    auto state_of = [&](std::ptrdiff_t j) -> const snapshot& { return j < 0 ? empty : states[static_cast<std::size_t>(j)]; };

    const auto dir = work / "cut";
    recorder::write(rec.state_at(cut, keep, random), dir);
    std::string failure;
    {
      auto reopened = reopen(dir);
      if (!reopened) {
        failure = "opening failed on a state a file system may leave: " + reopened.error().message;
      } else if (auto found = detail_check::read_all(*reopened, options.collection); !found) {
        failure = "reading the reopened storage failed: " + found.error().message;
      } else {
        bool matched = false;
        for (std::ptrdiff_t j = lowest; j <= last_started && !matched; ++j) matched = *found == state_of(j);
        if (!matched) {
          // Say what is wrong: a loss first, then disagreement, then any other difference.
          const snapshot& floor_state = state_of(lowest);
          const snapshot& newest = state_of(last_started);
          for (const auto& [id, status_then] : floor_state.statuses) {
            if (!newest.statuses.count(id)) continue;  // purged by the call in flight
            auto now = found->statuses.find(id);
            if (now == found->statuses.end()) {
              failure = "lost acknowledged event " + id;
              ++report.lost_acknowledged;
              break;
            }
            if (status_then == status::completed && now->second != status::completed) {
              failure = "acknowledged completion of " + id + " went back to " + std::string(to_string(now->second));
              ++report.lost_acknowledged;
              break;
            }
          }
          if (failure.empty())
            for (const auto& [entity, last] : found->last_events)
              if (!found->events.count(last) && floor_state.events.count(last)) {
                failure = "entity " + entity + " names event " + last + ", which is missing";
                break;
              }
          if (failure.empty())
            failure = "the state is none of those the calls " + std::to_string(lowest) + ".." +
                      std::to_string(last_started) + " left (" + std::to_string(found->events.size()) + " events, " +
                      std::to_string(found->entities.size()) + " entities)";
        }
        if (failure.empty()) {  // it must take writes again
          entity_record row;
          row.collection = options.collection;
          row.id = "after-cut";
          const timestamp later = timestamp(std::chrono::seconds(2082758400));  // after the workload's times
          const entity_change c = detail_check::save(std::move(row), event_id_generator{n + 1}.next(later), later, "{}");
          if (auto done = reopened->commit(c); !done) failure = "a save after reopening failed: " + done.error().message;
        }
      }
    }
    if (!failure.empty()) {
      ++report.failed_cuts;
      problem(where + ": " + failure);
    }
  }
  std::filesystem::remove_all(work);
  return report;
}

}  // namespace outbox::testing::power_loss
