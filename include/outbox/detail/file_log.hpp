#pragma once
/// \file
/// The file storage's log on disk (storage/file.hpp): POSIX file helpers, and `segment_log`,
/// which opens a directory's segments, replays them into a `memory_state`, starts and seals
/// segments, and compacts. The storage adds group commit and the operations on top.

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

#include "outbox/detail/completed_archive.hpp"
#include "outbox/detail/file_io.hpp"
#include "outbox/detail/lifecycle.hpp"
#include "outbox/detail/log_format.hpp"
#include "outbox/detail/memory_state.hpp"
#include "outbox/detail/seq_sizes.hpp"
#include "outbox/entity.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage/file_options.hpp"

namespace outbox {

namespace detail::file {

/// An OS failure as a typed error naming the file. No space (ENOSPC), a quota (EDQUOT) and a file
/// size limit (EFBIG: RLIMIT_FSIZE, or the file system's largest file) are all disk_full: the
/// write did not fit, and room must be made before writing again.
inline outbox::error os_error(std::string_view what, const std::filesystem::path& path, int err = errno) {
  const errc code = err == ENOSPC || err == EDQUOT || err == EFBIG ? errc::disk_full : errc::io_error;
  return outbox::error(code, std::string(what) + " " + path.string() + ": " + std::strerror(err));
}

/// A file descriptor that closes itself.
class fd {
 public:
  fd() = default;
  explicit fd(int value) : value_(value) {}
  fd(fd&& other) noexcept : value_(std::exchange(other.value_, -1)) {}
  fd& operator=(fd&& other) noexcept {
    if (this != &other) {
      reset();
      value_ = std::exchange(other.value_, -1);
    }
    return *this;
  }
  fd(const fd&) = delete;
  fd& operator=(const fd&) = delete;
  ~fd() { reset(); }
  void reset() noexcept {
    if (value_ >= 0) ::close(value_);
    value_ = -1;
  }
  [[nodiscard]] int get() const noexcept { return value_; }
  explicit operator bool() const noexcept { return value_ >= 0; }

 private:
  int value_ = -1;
};

/// Writes all of `data` at `offset`: false if it stopped short (errno says why). `*written`
/// is how far it got.
template <class Io>
bool put_at(Io& io, int file, std::string_view data, std::uint64_t offset, std::uint64_t* written = nullptr) {
  std::uint64_t done = 0;
  bool whole = true;
  while (done < data.size()) {
    const long long n = io.pwrite(file, data.data() + done, data.size() - done, offset + done);
    if (n < 0) {
      if (errno == EINTR) continue;
      whole = false;
      break;
    }
    done += static_cast<std::uint64_t>(n);
  }
  if (written) *written = done;
  return whole;
}

/// Writes `bytes` at `offset`.
template <class Io>
result<void> write_at(Io& io, int file, std::string_view bytes, std::uint64_t offset, const std::filesystem::path& path) {
  if (!put_at(io, file, bytes, offset)) return os_error("writing", path);
  return {};
}

/// Writes up to `zeros` zero bytes at `offset` and returns how many it wrote. Preallocation is
/// an optimisation, so it never fails: on a full disk it stops where the room ends, and a real
/// I/O error shows in the sync that follows.
template <class Io>
std::uint64_t preallocate(Io& io, int file, std::uint64_t offset, std::uint64_t zeros) {
  static constexpr char zero_block[1 << 16] = {};
  std::uint64_t done = 0;
  while (done < zeros) {
    const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(zeros - done, sizeof zero_block));
    std::uint64_t written = 0;
    const bool whole = put_at(io, file, std::string_view(zero_block, chunk), offset + done, &written);
    done += written;
    if (!whole) break;
  }
  return done;
}

template <class Io>
result<void> sync_file(Io& io, int file, const std::filesystem::path& path) {
  if (io.fdatasync(file) != 0) return os_error("syncing", path);
  return {};
}

template <class Io>
result<void> sync_directory(Io& io, const std::filesystem::path& dir) {
  fd d(io.open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d) return os_error("opening directory", dir);
  if (io.fsync(d.get()) != 0) return os_error("syncing directory", dir);
  return {};
}

template <class Io>
result<std::string> read_file(Io& io, const std::filesystem::path& path) {
  fd f(io.open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!f) return os_error("opening", path);
  // Read straight into a string of the file's size (one allocation, no copy), then on while the
  // file turns out longer than it was.
  struct stat st {};
  std::string data(io.fstat(f.get(), &st) == 0 && st.st_size > 0 ? static_cast<std::size_t>(st.st_size) : 0, '\0');
  std::size_t done = 0;
  while (true) {
    if (done == data.size()) data.resize(std::max<std::size_t>(2 * data.size(), 1 << 16));
    const long long n = io.read(f.get(), data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return os_error("reading", path);
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  data.resize(done);
  return data;
}

inline std::string segment_name(std::uint64_t number) {
  std::string digits = std::to_string(number);
  return "segment-" + std::string(digits.size() < 10 ? 10 - digits.size() : 0, '0') + digits + ".log";
}

/// The segment number of "segment-0000000042.log", or nullopt.
inline std::optional<std::uint64_t> segment_number(const std::string& name) {
  constexpr std::string_view prefix = "segment-", suffix = ".log";
  if (name.size() <= prefix.size() + suffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.empty() || digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoull(digits);
}

/// The log's state on disk and in memory, and the steps that open, extend and compact it. Not
/// synchronised: the storage holds its mutex around every use. Every system call that touches
/// the files' content or names goes through `io` (detail/file_io.hpp).
template <class Io>
struct segment_log {
  std::filesystem::path dir;
  file_options options;
  [[no_unique_address]] Io io;
  detail::file::fd lock_file;
  file_recovery recovery;
  memory_state memory;
  completed_archive archive;  // completed events read back at open: not in `memory`
  std::optional<outbox::error> broken;  // set once the files' state is unknown: reopen

  // The log: segment numbers in order; the last one is active (appended to).
  std::vector<std::uint64_t> segments;
  detail::file::fd active;
  std::uint64_t active_bytes = 0;     // where its log ends (the next group goes here)
  std::uint64_t allocated_bytes = 0;  // its size on disk: the log, then zeros (preallocation)

  // Space accounting for compaction: the size of the latest record of each live item.
  detail::seq_sizes event_bytes;
  std::map<std::pair<std::string, std::string>, std::uint32_t> entity_bytes;
  std::uint64_t total_bytes = 0;
  std::uint64_t live_bytes = 0;
  std::uint64_t compactions = 0;
  std::uint64_t failed_maintenance = 0;  // rolls and compactions given up without a change
  std::uint64_t compact_again_at = 0;    // dead bytes to wait for after a failed compaction
  bool unreadable_last = false;  // the last segment's header was unreadable (salvage kept going)

  segment_log(std::filesystem::path directory, file_options o, Io layer)
      : dir(std::move(directory)), options(o), io(std::move(layer)) {}

  std::filesystem::path path_of(std::uint64_t number) const { return dir / detail::file::segment_name(number); }

  // ---- opening ---------------------------------------------------------------------------

  result<void> open() {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return outbox::error(errc::io_error, "creating " + dir.string() + ": " + ec.message());
    ::chmod(dir.c_str(), 0700);
    const auto lock_path = dir / "LOCK";
    lock_file = fd(io.open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!lock_file) return os_error("opening", lock_path);
    if (::flock(lock_file.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK)
        return outbox::error(errc::already_open, dir.string() + " is in use by another file_storage (LOCK is held)");
      return os_error("locking", lock_path);
    }

    // A leftover .tmp is a compaction that never got renamed: the old segments are the state.
    std::vector<std::uint64_t> found;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) {
        io.unlink(entry.path().c_str());
        continue;
      }
      if (auto n = segment_number(name)) found.push_back(*n);
    }
    if (ec) return outbox::error(errc::io_error, "listing " + dir.string() + ": " + ec.message());
    std::sort(found.begin(), found.end());

    // Start from the newest segment that begins with a snapshot: it holds the whole state.
    std::size_t first = 0;
    std::vector<std::shared_ptr<const std::string>> contents(found.size());
    for (std::size_t i = found.size(); i-- > 0;) {
      auto bytes = read_file(io, path_of(found[i]));
      if (!bytes) return bytes.error();
      contents[i] = std::make_shared<const std::string>(std::move(*bytes));
      const std::string_view head(*contents[i]);
      if (log::scan_segment(head.substr(0, std::min<std::size_t>(head.size(), 1 << 20)), false).snapshot) {
        first = i;
        break;
      }
    }
    std::uint64_t log_end = 0;  // of the last segment: its zeros, if any, follow
    for (std::size_t i = first; i < found.size(); ++i) {
      const bool last = i + 1 == found.size();
      auto replayed = replay(found[i], contents[i], last);
      if (!replayed) return replayed.error();
      log_end = *replayed;
    }
    archive.finish_loading();
    // Segments before the snapshot are garbage from a compaction that crashed before deleting.
    for (std::size_t i = 0; i < first; ++i) io.unlink(path_of(found[i]).c_str());
    segments.assign(found.begin() + static_cast<std::ptrdiff_t>(first), found.end());

    memory.set_next_lease(lifecycle::random_lease_start());
    if (segments.empty()) return start_segment(1, {});
    if (unreadable_last) return start_segment(segments.back() + 1, {});  // never append after garbage
    return open_active(log_end);
  }

  /// Replays one segment; returns where its readable log ends. Its completed events go to the
  /// archive, which keeps `contents` for them.
  result<std::uint64_t> replay(std::uint64_t number, const std::shared_ptr<const std::string>& contents, bool last) {
    const auto path = path_of(number);
    const std::string& bytes = *contents;
    auto scan = log::scan_segment(bytes, options.salvage, true);
    if (scan.bad_offset) {
      // The last segment's tail may be a write a power cut tore: then everything from the bad
      // record on was never acknowledged (each write is synced before the next one starts),
      // readable records after it included, and it is cut off below.
      const bool torn = last && !scan.bad_header &&
                        (!scan.valid_after_bad || log::lost_sector_between(bytes, *scan.bad_offset, scan.readable_after));
      if (torn && scan.valid_after_bad && options.salvage) scan = log::scan_segment(bytes, false);
      if (!torn && !options.salvage) {
        return outbox::error(errc::corrupt_data, path.string() + ": unreadable record at offset " +
                                                     std::to_string(*scan.bad_offset) +
                                                     (scan.bad_header ? " (segment header)" : "") +
                                                     "; open with file_options::salvage to keep the readable groups");
      }
      if (!torn) {
        ++recovery.salvaged_skips;
        recovery.notes.push_back("salvaged " + path.string() + ": skipped unreadable data from offset " +
                                 std::to_string(*scan.bad_offset));
      }
    }
    for (std::size_t i = 0; i < scan.groups.size(); ++i) {
      const auto contradiction = apply_group(scan.groups[i], scan.completed, contents);
      if (!contradiction) continue;
      const std::string where = path.string() + ": the group at offset " + std::to_string(scan.group_offsets[i]);
      if (!options.salvage)
        return outbox::error(errc::corrupt_data, where + " contradicts the log before it: " + *contradiction +
                                                     "; open with file_options::salvage to keep the rest");
      ++recovery.salvaged_skips;
      recovery.notes.push_back("salvaged " + where + ": left out what contradicts the log before it (" + *contradiction + ")");
    }
    recovery.groups_replayed += scan.groups.size();
    total_bytes += scan.valid_end;
    // Zeros after the log are preallocated space, not a record; torn bytes end at the last
    // byte that is not zero.
    std::size_t written_end = bytes.size();
    while (written_end > scan.valid_end && bytes[written_end - 1] == '\0') --written_end;
    if (last && written_end > scan.valid_end && !scan.bad_header) {
      // A crash mid-write: cut back to the last whole group.
      const std::uint64_t cut = written_end - scan.valid_end;
      fd f(io.open(path.c_str(), O_WRONLY | O_CLOEXEC));
      if (!f || io.ftruncate(f.get(), scan.valid_end) != 0 || io.fsync(f.get()) != 0)
        return os_error("truncating the torn tail of", path);
      recovery.torn_bytes_truncated += cut;
      recovery.torn_file = path.string();
      recovery.notes.push_back("truncated a torn tail of " + std::to_string(cut) + " bytes from " + path.string() +
                               " at offset " + std::to_string(scan.valid_end));
    } else if (!last && bytes.size() > scan.valid_end && !options.salvage) {
      return outbox::error(errc::corrupt_data, path.string() + ": incomplete group at offset " +
                                                   std::to_string(scan.valid_end) + " in a sealed segment");
    } else if (!last && bytes.size() > scan.valid_end && !scan.bad_offset) {  // say what salvage dropped
      ++recovery.salvaged_skips;
      recovery.notes.push_back("salvaged " + path.string() + ": dropped an incomplete group at offset " +
                               std::to_string(scan.valid_end) + " of a sealed segment");
    }
    if (last && scan.bad_header && bytes.size() >= log::header_size) unreadable_last = true;
    if (scan.bad_header && last && bytes.size() < log::header_size) {
      // A segment whose creation was cut short: start it again.
      io.unlink(path.c_str());
    }
    return scan.valid_end;
  }

  /// Replays one group into memory, and its completed events (in `completed`) into the
  /// archive. A record that contradicts the state (an event id or a natural key already held by
  /// another live item: the log was checksummed, but not written by this storage) is left out,
  /// and the first such is described in the return value.
  std::optional<std::string> apply_group(std::vector<log::record>& group, const std::vector<log::completed_record>& completed,
                                         const completed_archive::bytes_ptr& bytes) {
    std::optional<std::string> contradiction;
    auto id_taken = [&](const event_id& id, std::uint64_t seq) {
      if (const auto archived = archive.seq_of(id); archived && *archived != seq) return true;
      if (const event* same = memory.event_at(seq); same && same->id == id) return false;
      const auto holder = memory.find(id);
      return holder && holder->seq != seq;
    };
    auto taken_message = [](const event_id& id, std::uint64_t seq) {
      return "event " + id.to_string() + " logged under seq " + std::to_string(seq) + " while another event holds that id";
    };
    for (auto& rec : group) {
      if (auto* run = std::get_if<log::completed_run>(&rec)) {
        for (std::size_t i = run->first; i < run->first + run->count; ++i) {
          const log::completed_record& c = completed[i];
          if (id_taken(c.id, c.seq)) {
            if (!contradiction) contradiction = taken_message(c.id, c.seq);
            continue;
          }
          memory.restore_removed_event(c.seq);  // an earlier state of it
          memory.set_next_seq(c.seq + 1);
          archive.put(c, bytes);
          account_event(c.seq, c.body_size + static_cast<std::uint32_t>(log::frame_overhead));
        }
      } else if (auto* m = std::get_if<log::marker>(&rec)) {
        if (m->type == log::record_type::snapshot) {
          memory = memory_state();
          archive.clear();
          event_bytes.clear();
          entity_bytes.clear();
          live_bytes = 0;
          total_bytes = 0;
        }
        memory.set_next_seq(m->next_seq);
      } else if (auto* e = std::get_if<event>(&rec)) {
        if (const auto archived = archive.seq_of(e->id); (archived && *archived != e->seq) || !memory.restore_event(*e)) {
          if (!contradiction) contradiction = taken_message(e->id, e->seq);
          continue;
        }
        archive.remove(e->seq);  // a later state of an archived event: memory holds it now
        account_event(e->seq, record_size(*e));
      } else if (auto* seq = std::get_if<std::uint64_t>(&rec)) {
        forget_event(*seq);
        memory.restore_removed_event(*seq);
        archive.remove(*seq);
      } else if (auto* row = std::get_if<entity_record>(&rec)) {
        if (!memory.restore_entity(*row)) {
          if (!contradiction) contradiction = "entity " + row->collection + "/" + row->id + " logged with natural key \"" + row->natural_key + "\" while another row of its user holds it";
          continue;
        }
        account_entity({row->collection, row->id}, record_size(*row));
      } else if (auto* gone = std::get_if<log::removed_entity>(&rec)) {
        forget_entity({gone->collection, gone->id});
        memory.restore_removed_entity({gone->collection, gone->id});
      }
    }
    return contradiction;
  }

  static std::uint32_t record_size(const event& e) {
    return static_cast<std::uint32_t>(log::event_record_size(e));
  }
  static std::uint32_t record_size(const entity_record& r) {
    return static_cast<std::uint32_t>(log::entity_record_size(r));
  }
  void account_event(std::uint64_t seq, std::uint32_t bytes) {
    live_bytes -= event_bytes.set(seq, bytes);
    live_bytes += bytes;
  }
  void forget_event(std::uint64_t seq) { live_bytes -= event_bytes.erase(seq); }
  void account_entity(const std::pair<std::string, std::string>& key, std::uint32_t bytes) {
    auto [it, fresh] = entity_bytes.try_emplace(key, bytes);
    if (!fresh) live_bytes -= it->second;
    it->second = bytes;
    live_bytes += bytes;
  }
  void forget_entity(const std::pair<std::string, std::string>& key) {
    auto it = entity_bytes.find(key);
    if (it == entity_bytes.end()) return;
    live_bytes -= it->second;
    entity_bytes.erase(it);
  }

  /// Makes the last segment active; its log ends at `log_end`, zeros (if any) follow.
  result<void> open_active(std::uint64_t log_end) {
    const auto path = path_of(segments.back());
    active = fd(io.open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    if (!active) return os_error("opening", path);
    struct stat st {};
    if (io.fstat(active.get(), &st) != 0) return os_error("inspecting", path);
    allocated_bytes = static_cast<std::uint64_t>(st.st_size);
    active_bytes = std::min(log_end, allocated_bytes);
    if (active_bytes < log::header_size) {
      // Empty (its creation was cut short): write the header again.
      if (io.ftruncate(active.get(), 0) != 0) return os_error("resetting", path);
      const std::string header = log::segment_header();
      if (auto w = write_at(io, active.get(), header, 0, path); !w) return w;
      if (auto s = sync_file(io, active.get(), path); !s) return s;
      active_bytes = allocated_bytes = header.size();
    }
    return {};
  }

  /// Creates segment `number` holding the header and `initial` records, synced, and makes it
  /// active. Written under a temporary name and renamed, so it appears whole or not at all.
  /// A failure up to the rename (a full disk, say) changes nothing and removes the temporary
  /// file: `*clean` is then true. After the rename the new segment is on disk but may not be
  /// in memory: `*clean` is false, and the storage must be reopened.
  result<void> start_segment(std::uint64_t number, std::string_view initial, bool* clean = nullptr) {
    const auto path = path_of(number);
    const auto tmp = std::filesystem::path(path.string() + ".tmp");
    if (clean) *clean = true;
    auto written = [&]() -> result<void> {
      fd f(io.open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
      if (!f) return os_error("creating", tmp);
      if (auto w = write_at(io, f.get(), log::segment_header(), 0, tmp); !w) return w;
      if (auto w = write_at(io, f.get(), initial, log::header_size, tmp); !w) return w;
      return sync_file(io, f.get(), tmp);
    }();
    if (written && io.rename(tmp.c_str(), path.c_str()) != 0) written = os_error("renaming", tmp);
    if (!written) {
      io.unlink(tmp.c_str());  // its room back, on a full disk
      return written;
    }
    if (clean) *clean = false;
    if (auto d = sync_directory(io, dir); !d) return d;
    segments.push_back(number);
    total_bytes += log::header_size + initial.size();
    return open_active(log::header_size + initial.size());
  }

  /// Counts a failed roll or compaction; one that left the files unknown breaks the storage.
  outbox::error maintenance_failed(const outbox::error& e, bool clean) {
    ++failed_maintenance;
    if (!clean && !broken) broken = outbox::error(e.code, e.message + " (reopen the storage to recover)");
    return e;
  }

  /// Cuts the active segment's preallocated zeros off, durably, before a later segment
  /// exists: only the last segment may end in zeros.
  result<void> seal_active() {
    if (allocated_bytes <= active_bytes) return {};
    const auto path = path_of(segments.back());
    if (io.ftruncate(active.get(), active_bytes) != 0 || io.fsync(active.get()) != 0)
      return os_error("sealing", path);
    allocated_bytes = active_bytes;
    return {};
  }

  /// Writes the live state to a new segment (tmp, sync, rename, sync dir), then deletes the old.
  /// Each live item is written in the state its latest record holds, so its record is the
  /// size `event_bytes` / `entity_bytes` already say, and `live_bytes` stays what it is: the
  /// accounting needs no rebuilding, and the snapshot's buffer is sized once from it.
  result<void> compact_locked() {
    // The active segment's zeros go first: they are room the snapshot may need on a full disk,
    // and the segment is deleted after a compaction anyway.
    if (auto sealed = seal_active(); !sealed) return maintenance_failed(sealed.error(), false);
    auto snapshot_bytes = std::make_shared<std::string>();
    std::string& snapshot = *snapshot_bytes;
    snapshot.reserve(live_bytes + 2 * (log::frame_overhead + 9));
    log::put_marker(snapshot, log::record_type::snapshot, memory.next_seq());
    std::vector<std::size_t> archived_at;  // the archive's records, copied as they are
    archived_at.reserve(archive.size());
    archive.copy_records(snapshot, archived_at);
    for (const event& e : memory.events()) log::put_event(snapshot, e);
    for (const auto& entry : memory.entities()) log::put_entity(snapshot, entry.second);
    log::put_marker(snapshot, log::record_type::commit, memory.next_seq());
    const std::vector<std::uint64_t> old = segments;
    bool clean = true;
    if (auto started = start_segment(segments.back() + 1, snapshot, &clean); !started)
      return maintenance_failed(started.error(), clean);
    total_bytes = log::header_size + snapshot.size();
    archive.rebase(std::move(snapshot_bytes), archived_at);
    for (auto n : old) io.unlink(path_of(n).c_str());
    segments.erase(segments.begin(), segments.end() - 1);
    ++compactions;
    compact_again_at = 0;
    if (auto synced = sync_directory(io, dir); !synced) return maintenance_failed(synced.error(), false);
    return {};
  }
};

}  // namespace detail::file

}  // namespace outbox
