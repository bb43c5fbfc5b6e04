// outbox::file_storage against damaged files. A log built by real operations is cut short (at
// every offset of its last groups, at record edges and a stride below them) and has bits flipped
// all over it; each reopen must either fail with a typed error naming the file and offset, or
// recover a state the log really passed through and say what it dropped. Also: garbage and
// empty segments, a leftover .tmp, and segments a compaction left behind.
#include <outbox/storage/file.hpp>
#include <outbox/testing/storage_conformance.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <unistd.h>

namespace {

namespace fs = std::filesystem;
namespace wire = outbox::detail::log;
using namespace std::chrono_literals;
using outbox::errc;
using outbox::event;
using outbox::event_id;
using outbox::file_storage;
using outbox::testing::storage_fixture;

// ---- files -----------------------------------------------------------------------------------

/// A fresh directory under the temp directory, removed with everything in it.
class temp_dir {
 public:
  explicit temp_dir(std::string_view stem) {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() / (std::string(stem) + "-" + std::to_string(::getpid()) + "-" +
                                         std::to_string(counter++) + "-" + std::to_string(std::random_device{}()));
    fs::create_directories(path_);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  [[nodiscard]] const fs::path& path() const noexcept { return path_; }
  [[nodiscard]] fs::path segment(std::uint64_t number) const {
    return path_ / outbox::detail::file::segment_name(number);
  }

  /// Leaves exactly one segment, numbered `number`, holding `bytes` (and the LOCK file, if any).
  void reset_to(std::uint64_t number, std::string_view bytes) const {
    for (const auto& entry : fs::directory_iterator(path_))
      if (entry.path().filename() != "LOCK") fs::remove(entry.path());
    write(segment(number), bytes);
  }

  static void write(const fs::path& file, std::string_view bytes) {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    REQUIRE(out.good());
  }
  static std::string read(const fs::path& file) {
    std::ifstream in(file, std::ios::binary | std::ios::ate);
    std::string bytes(static_cast<std::size_t>(std::max<std::streamoff>(in.tellg(), 0)), '\0');
    in.seekg(0);
    in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return bytes;
  }

 private:
  fs::path path_;
};

/// Fast options: these tests are about what is on disk, not about power loss.
outbox::file_options options(bool salvage = false) {
  outbox::file_options o;
  o.sync = outbox::file_options::sync_policy::none;
  o.salvage = salvage;
  return o;
}

// ---- what a storage holds --------------------------------------------------------------------

/// Everything a storage answers, in a form two storages can be compared by: every field of every
/// event and entity row (serialised with the log's own encoder), plus what the indexes say.
struct snapshot {
  std::map<std::uint64_t, std::string> events;          // seq -> the event, serialised
  std::map<std::string, std::string> entities;          // "collection/id" -> the row, serialised
  std::vector<std::string> index_problems;              // lookups that disagree with the rows
  std::string counts;                                   // stats per user and overall

  friend bool operator==(const snapshot&, const snapshot&) = default;
};

constexpr const char* collections[] = {"steps"};
constexpr const char* users[] = {"alice", "bob"};

snapshot take_snapshot(file_storage& s, outbox::timestamp now) {
  snapshot shot;
  outbox::event_query all;
  all.limit = 1'000'000;
  const std::vector<event> events = s.query(all).value();
  for (const event& e : events) {
    std::string bytes;
    wire::put_event(bytes, e);
    shot.events.emplace(e.seq, std::move(bytes));
    auto by_id = s.find(e.id).value();
    if (!by_id || by_id->seq != e.seq)
      shot.index_problems.push_back("find(" + e.id.to_string() + ") misses seq " + std::to_string(e.seq));
  }
  for (const char* collection : collections) {
    outbox::entity_query q;
    q.collection = collection;
    q.limit = 1'000'000;
    const std::vector<outbox::entity_record> rows = s.query_entities(q).value();
    for (const auto& row : rows) {
      std::string bytes;
      wire::put_entity(bytes, row);
      shot.entities.emplace(row.collection + "/" + row.id, std::move(bytes));
      if (!row.natural_key.empty()) {
        auto owner = s.find_entity_by_key(row.collection, row.user_id, row.natural_key).value();
        if (!owner || owner->id != row.id) shot.index_problems.push_back("natural key of " + row.id);
      }
    }
  }
  auto count = [&](std::optional<std::string_view> user) {
    const auto stats = s.stats(user, now).value();
    for (auto n : stats.counts) shot.counts += std::to_string(n) + ",";
    shot.counts += stats.oldest_pending_age ? std::to_string(stats.oldest_pending_age->count()) : "-";
    shot.counts += stats.oldest_due_age ? std::to_string(stats.oldest_due_age->count()) : "-";
    shot.counts += ";";
  };
  count(std::nullopt);
  for (const char* user : users) count(user);
  return shot;
}

/// Where two snapshots differ, for failure messages.
std::string difference(const snapshot& got, const snapshot& want) {
  std::string text;
  for (const auto& [seq, bytes] : got.events) {
    auto it = want.events.find(seq);
    if (it == want.events.end()) text += " extra event seq " + std::to_string(seq) + ";";
    else if (it->second != bytes) text += " event seq " + std::to_string(seq) + " differs;";
  }
  for (const auto& [seq, bytes] : want.events)
    if (!got.events.contains(seq)) text += " missing event seq " + std::to_string(seq) + ";";
  for (const auto& [key, bytes] : got.entities) {
    auto it = want.entities.find(key);
    if (it == want.entities.end()) text += " extra entity " + key + ";";
    else if (it->second != bytes) text += " entity " + key + " differs;";
  }
  for (const auto& [key, bytes] : want.entities)
    if (!got.entities.contains(key)) text += " missing entity " + key + ";";
  for (const auto& p : got.index_problems) text += " index: " + p + ";";
  if (got.counts != want.counts) text += " stats " + got.counts + " instead of " + want.counts + ";";
  return text.empty() ? " (no difference)" : text;
}

// ---- the log under test ----------------------------------------------------------------------

/// One segment written by real operations, and the state after each of its groups.
struct recorded_log {
  std::string bytes;                      ///< the whole segment file
  std::vector<std::size_t> boundaries;    ///< end offset of each whole group; [0] is the header
  std::vector<snapshot> states;           ///< the storage's state at each boundary
  std::vector<std::size_t> record_starts; ///< offset of every record
  outbox::timestamp now;                  ///< the time snapshots are taken at

  [[nodiscard]] std::size_t groups() const { return boundaries.size() - 1; }
  /// The offset of the record holding byte `at` (0 for the segment header).
  [[nodiscard]] std::size_t record_at(std::size_t at) const {
    if (at < wire::header_size) return 0;
    return *std::prev(std::upper_bound(record_starts.begin(), record_starts.end(), at));
  }
  /// The group holding byte `at`, counted from 1 (0 for the segment header).
  [[nodiscard]] std::size_t group_at(std::size_t at) const {
    return static_cast<std::size_t>(std::upper_bound(boundaries.begin(), boundaries.end(), at) - boundaries.begin());
  }
  /// The index in record_starts of the commit record that ends group `g` (counted from 1).
  [[nodiscard]] std::size_t group_end_record(std::size_t g) const {
    return static_cast<std::size_t>(std::lower_bound(record_starts.begin(), record_starts.end(), boundaries[g]) -
                                    record_starts.begin()) - 1;
  }
  /// The index of the last boundary at or before `offset`.
  [[nodiscard]] std::size_t boundary_before(std::size_t offset) const { return group_at(offset) - 1; }
};

std::string every_byte_value() {
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes.push_back(static_cast<char>(i));
  return bytes;
}

/// A new event for user "carol", with an id no event of the recorded log has.
event fresh_event(std::string key) {
  static outbox::event_id_generator ids(4242);
  storage_fixture f;
  event e = f.make("carol", std::move(key));
  e.id = ids.next(f.t0);
  e.payload = every_byte_value();
  return e;
}

/// Appends, claims, outcomes of every kind, entity creates, updates, replacements and drops,
/// a reset and a purge: every record type the log has, binary payloads included. A few KiB.
recorded_log build_log() {
  temp_dir dir("outbox-corruption-build");
  storage_fixture f;
  const auto t0 = f.t0;
  recorded_log out;
  out.now = t0 + 10s;
  {
    auto s = file_storage::open(dir.path(), options()).value();
    auto mark = [&] {
      const auto size = static_cast<std::size_t>(fs::file_size(dir.segment(1)));
      if (!out.boundaries.empty() && size == out.boundaries.back()) return;
      out.boundaries.push_back(size);
      out.states.push_back(take_snapshot(s, out.now));
    };
    auto append = [&](std::vector<event> batch) {
      REQUIRE(outbox::testing::append_keeping(s, batch).has_value());
      mark();
    };
    auto claim = [&](std::string_view user, outbox::timestamp at, std::size_t limit) {
      std::vector<event> claimed;
      REQUIRE(s.claim(f.claim_at(user, at, limit), claimed).value() == limit);
      mark();
      return claimed;
    };
    auto record = [&](std::vector<outbox::outcome> outcomes) {
      REQUIRE(s.record(std::span<outbox::outcome>(outcomes)).value() == outcomes.size());
      mark();
    };
    auto commit = [&](const outbox::entity_change& change) {
      REQUIRE(s.commit(change).has_value());
      mark();
    };
    auto row = [&](std::string_view id) { return s.find_entity("steps", id).value().value(); };

    mark();  // the bare header
    std::vector<event> first = {f.make("alice", "a"), f.make("alice", "b")};
    first[0].payload = every_byte_value();
    first[1].payload = std::string("\0\0\0\0OUTBOXLG\x01\0\0\0\xff", 17);
    append(first);
    append({f.make("bob", "x", outbox::priority::high)});
    commit(f.make_entity_change("steps", "s1", "alice", "2026-01-01T00"));
    auto alice = claim("alice", t0 + 1s, 2);  // a and b
    record({storage_fixture::complete(alice[0], t0 + 2s, "remote-a"),
            storage_fixture::fail(alice[1], t0 + 2s, t0 + 30s, "503 busy")});
    auto update = f.make_update(row("s1"));
    commit(update);
    commit(f.make_entity_change("steps", "s2", "bob", "2026-01-01T01"));
    auto bob = claim("bob", t0 + 3s, 2);  // x (high priority), then s2's event
    record({storage_fixture::kill(bob[0], t0 + 4s, "400 rejected"),
            storage_fixture::complete(bob[1], t0 + 4s, "remote-s2")});  // writes back onto s2
    {
      const event_id dead = bob[0].id;
      REQUIRE(s.reset(std::span<const event_id>(&dead, 1), t0 + 5s).value() == 1);
      mark();
    }
    commit(f.make_replace(row("s1"), update.event.id));
    auto s3 = f.make_entity_change("steps", "s3", "alice");
    commit(s3);
    commit(storage_fixture::make_drop(row("s3"), s3.event.id));
    REQUIRE(s.purge_completed(t0 + 1h).value() == 2);  // a and s2's event
    mark();
    auto offline = claim("alice", t0 + 6s, 1);  // s1's first event
    record({storage_fixture::release(offline[0], t0 + 7s)});
    append({f.make("bob", "z", outbox::priority::low)});
  }
  // One segment, nothing else: every byte below is the log under test.
  std::size_t files = 0;
  for (const auto& entry : fs::directory_iterator(dir.path())) files += entry.path().filename() != "LOCK";
  REQUIRE(files == 1);
  out.bytes = temp_dir::read(dir.segment(1));
  REQUIRE(out.bytes.size() == out.boundaries.back());
  REQUIRE(out.groups() >= 15);
  for (std::size_t pos = wire::header_size; pos < out.bytes.size();) {
    out.record_starts.push_back(pos);
    auto end = wire::frame_end(out.bytes, pos);
    REQUIRE(end);
    pos = *end;
  }
  return out;
}

/// The state of the log with group `skip` (counted from 1) left out, as a reader that drops
/// exactly that group would see it; computed by replaying the other groups, undamaged.
snapshot state_without_group(const recorded_log& log, std::size_t skip, const temp_dir& dir) {
  std::string bytes = log.bytes.substr(0, log.boundaries[skip - 1]);
  bytes += log.bytes.substr(log.boundaries[skip]);
  dir.reset_to(1, bytes);
  auto s = file_storage::open(dir.path(), options()).value();
  REQUIRE(s.recovery().notes.empty());
  return take_snapshot(s, log.now);
}

bool mentions(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

bool notes_mention(const outbox::file_recovery& r, const std::string& what) {
  return std::any_of(r.notes.begin(), r.notes.end(), [&](const std::string& note) { return mentions(note, what); });
}

/// Collects failures of a long sweep, so one failed case does not hide the others.
struct problems {
  std::vector<std::string> found;
  void add(std::string what) { found.push_back(std::move(what)); }
  [[nodiscard]] std::string first_few() const {
    std::string text = std::to_string(found.size()) + " problem(s):";
    for (std::size_t i = 0; i < found.size() && i < 15; ++i) text += "\n  " + found[i];
    return text;
  }
};

}  // namespace

// ---- torn tails ------------------------------------------------------------------------------

TEST_CASE("a log cut short anywhere reopens at the last whole group, and reports the cut",
          "[file][corruption]") {
  const recorded_log log = build_log();
  temp_dir dir("outbox-corruption-cut");
  const auto segment = dir.segment(1);
  // Every offset of the last three groups, each followed by an append and a second reopen.
  // Below them, down to the header: every group and record boundary and the bytes either side
  // of it, and every fifth offset (an odd stride, so every position within the 8-byte frame
  // fields comes up), each group boundary also followed by an append.
  const std::size_t thorough_from = log.boundaries[log.groups() - 3];
  std::set<std::size_t> offsets;
  for (std::size_t cut = thorough_from; cut <= log.bytes.size(); ++cut) offsets.insert(cut);
  for (std::size_t cut = wire::header_size; cut < thorough_from; cut += 5) offsets.insert(cut);
  for (const std::size_t edge : log.record_starts)
    for (std::size_t near : {edge - 1, edge, edge + 1}) offsets.insert(std::max(near, wire::header_size));
  for (const std::size_t edge : log.boundaries) offsets.insert(edge);
  problems trouble;
  std::size_t cuts = 0, appended = 0;
  for (const std::size_t cut : offsets) {
    const std::size_t k = log.boundary_before(cut);
    // Zero bytes at the end of the cut are indistinguishable from preallocated space (a
    // record's length is never 0, so no record begins there): the torn tail ends before them.
    std::size_t torn_end = cut;
    while (torn_end > log.boundaries[k] && log.bytes[torn_end - 1] == '\0') --torn_end;
    const bool at_boundary = log.boundaries[k] == torn_end;
    const std::string where = "cut at " + std::to_string(cut) + " (group " + std::to_string(k) + " ends at " +
                              std::to_string(log.boundaries[k]) + "): ";
    dir.reset_to(1, std::string_view(log.bytes).substr(0, cut));
    ++cuts;
    std::optional<file_storage> s;
    if (auto opened = file_storage::open(dir.path(), options()); opened) {
      s.emplace(std::move(*opened));
    } else {
      trouble.add(where + "open failed: " + opened.error().what());
      continue;
    }
    const auto& r = s->recovery();
    if (at_boundary) {
      if (r.torn_bytes_truncated != 0 || !r.notes.empty())
        trouble.add(where + "reported a torn tail at a group boundary");
    } else {
      if (r.torn_bytes_truncated != torn_end - log.boundaries[k])
        trouble.add(where + "torn_bytes_truncated " + std::to_string(r.torn_bytes_truncated));
      if (r.torn_file != segment.string() || !notes_mention(r, segment.string()))
        trouble.add(where + "recovery does not name " + segment.string());
    }
    // Cut back to the last whole group, unless only zeros follow it: they stay as free space.
    if (const auto size = fs::file_size(segment); size != (at_boundary ? cut : log.boundaries[k]))
      trouble.add(where + "file left at " + std::to_string(size) + " bytes");
    if (auto got = take_snapshot(*s, log.now); !(got == log.states[k]))
      trouble.add(where + "state differs:" + difference(got, log.states[k]));
    if (cut < thorough_from && !at_boundary) continue;

    // The storage goes on from the cut: a new group lands after the last whole one and survives.
    std::vector<event> more = {fresh_event("after-the-cut")};
    if (!outbox::testing::append_keeping(*s, more)) {
      trouble.add(where + "append after the cut failed");
      continue;
    }
    ++appended;
    s.reset();
    auto again = file_storage::open(dir.path(), options());
    if (!again) {
      trouble.add(where + "second reopen failed: " + again.error().what());
      continue;
    }
    if (!again->recovery().notes.empty()) trouble.add(where + "second reopen reported: " + again->recovery().notes[0]);
    auto found = again->find(more[0].id).value();
    if (!found || found->payload != more[0].payload) trouble.add(where + "the event appended after the cut is lost");
    // Everything else is as it was at the cut (carol's event aside).
    auto rest = take_snapshot(*again, log.now);
    if (found) rest.events.erase(found->seq);
    if (rest.events != log.states[k].events || rest.entities != log.states[k].entities || !rest.index_problems.empty())
      trouble.add(where + "second reopen state differs:" + difference(rest, log.states[k]));
  }
  INFO(trouble.first_few());
  CHECK(trouble.found.empty());
  INFO(std::to_string(cuts) + " cuts of a " + std::to_string(log.bytes.size()) + "-byte segment, " +
       std::to_string(appended) + " followed by an append");
  CHECK(cuts >= (log.bytes.size() - wire::header_size) / 5);
  CHECK(appended >= log.bytes.size() - thorough_from);
}

// ---- flipped bits ----------------------------------------------------------------------------

namespace {

/// The bits flipped: all eight of every header byte and of every byte from `all_bits_from` on;
/// before that, one bit of every `stride`-th byte, the bit rotating with the offset.
std::vector<std::pair<std::size_t, int>> flips_for(const recorded_log& log, std::size_t all_bits_from,
                                                   std::size_t stride = 1) {
  std::vector<std::pair<std::size_t, int>> flips;
  for (std::size_t at = 0; at < log.bytes.size(); ++at) {
    if (at < wire::header_size || at >= all_bits_from) {
      for (int bit = 0; bit < 8; ++bit) flips.emplace_back(at, bit);
    } else if (at % stride == 0) {
      flips.emplace_back(at, static_cast<int>(at % 8));
    }
  }
  return flips;
}

/// Whether `message` names `offset` exactly ("offset 16" must not match "offset 160").
bool names_offset(const std::string& message, std::size_t offset) {
  const std::string needle = "offset " + std::to_string(offset);
  for (auto at = message.find(needle); at != std::string::npos; at = message.find(needle, at + 1)) {
    const auto after = at + needle.size();
    if (after == message.size() || message[after] < '0' || message[after] > '9') return true;
  }
  return false;
}

/// The reserved header word (bytes 12..15) is written as zero and not read back: a flip there
/// changes nothing the reader uses. The only bytes whose damage may go unreported.
bool in_reserved_header(std::size_t at) { return at >= 12 && at < wire::header_size; }

/// Every event seq and entity key the records of each group write, from the undamaged log.
struct touched_items {
  std::vector<std::set<std::uint64_t>> seqs;      // [group - 1]
  std::vector<std::set<std::string>> entities;    // [group - 1]
};

touched_items items_of_groups(const recorded_log& log) {
  touched_items items;
  const auto scan = wire::scan_segment(log.bytes, false);
  REQUIRE(scan.groups.size() == log.groups());
  for (const auto& group : scan.groups) {
    auto& seqs = items.seqs.emplace_back();
    auto& entities = items.entities.emplace_back();
    for (const auto& rec : group) {
      if (const auto* e = std::get_if<event>(&rec)) seqs.insert(e->seq);
      if (const auto* seq = std::get_if<std::uint64_t>(&rec)) seqs.insert(*seq);
      if (const auto* row = std::get_if<outbox::entity_record>(&rec)) entities.insert(row->collection + "/" + row->id);
      if (const auto* gone = std::get_if<wire::removed_entity>(&rec))
        entities.insert(gone->collection + "/" + gone->id);
    }
  }
  return items;
}

/// Every state each event and entity row was ever in at a group boundary.
struct item_history {
  std::map<std::uint64_t, std::set<std::string>> events;
  std::map<std::string, std::set<std::string>> entities;
};

item_history history_of(const recorded_log& log) {
  item_history h;
  for (const auto& state : log.states) {
    for (const auto& [seq, bytes] : state.events) h.events[seq].insert(bytes);
    for (const auto& [key, bytes] : state.entities) h.entities[key].insert(bytes);
  }
  return h;
}

/// What salvage may answer when group `g` was damaged: everything the group did not write exactly
/// as the log without that group has it; what it wrote in a state the item really had at some
/// group boundary, or absent if it was absent at a boundary from just before `g` on (not created
/// yet, or removed). Never an invented value, never an item lost that no damaged group wrote.
std::string salvage_problems(const snapshot& got, const snapshot& without, const std::set<std::uint64_t>& seqs,
                             const std::set<std::string>& entities, const item_history& history,
                             const recorded_log& log, std::size_t g) {
  auto absent_since = [&](auto&& absent) {
    for (std::size_t k = g - 1; k < log.states.size(); ++k)
      if (absent(log.states[k])) return true;
    return false;
  };
  std::string text;
  std::set<std::uint64_t> all_seqs;
  for (const auto& [seq, bytes] : got.events) all_seqs.insert(seq);
  for (const auto& [seq, bytes] : without.events) all_seqs.insert(seq);
  for (auto seq : all_seqs) {
    const auto mine = got.events.find(seq);
    if (seqs.contains(seq)) {
      if (mine == got.events.end()) {
        if (!absent_since([&](const snapshot& s) { return !s.events.contains(seq); }))
          text += " event seq " + std::to_string(seq) + " lost;";
      } else if (!history.events.contains(seq)) {
        text += " invented event seq " + std::to_string(seq) + ";";
      } else if (!history.events.at(seq).contains(mine->second)) {
        text += " event seq " + std::to_string(seq) + " in a state it never had;";
      }
      continue;
    }
    const auto theirs = without.events.find(seq);
    if ((mine == got.events.end()) != (theirs == without.events.end()) ||
        (mine != got.events.end() && mine->second != theirs->second))
      text += " event seq " + std::to_string(seq) + " of an undamaged group differs;";
  }
  std::set<std::string> all_keys;
  for (const auto& [key, bytes] : got.entities) all_keys.insert(key);
  for (const auto& [key, bytes] : without.entities) all_keys.insert(key);
  for (const auto& key : all_keys) {
    const auto mine = got.entities.find(key);
    if (entities.contains(key)) {
      if (mine == got.entities.end()) {
        if (!absent_since([&](const snapshot& s) { return !s.entities.contains(key); }))
          text += " entity " + key + " lost;";
      } else if (!history.entities.contains(key) || !history.entities.at(key).contains(mine->second)) {
        text += " entity " + key + " in a state it never had;";
      }
      continue;
    }
    const auto theirs = without.entities.find(key);
    if ((mine == got.entities.end()) != (theirs == without.entities.end()) ||
        (mine != got.entities.end() && mine->second != theirs->second))
      text += " entity " + key + " of an undamaged group differs;";
  }
  for (const auto& p : got.index_problems) text += " index: " + p + ";";
  return text;
}

}  // namespace

TEST_CASE("a flipped bit anywhere fails the open naming the file and record, or costs only a reported torn tail",
          "[file][corruption]") {
  const recorded_log log = build_log();
  temp_dir dir("outbox-corruption-flip");
  const auto segment = dir.segment(1);
  problems trouble;
  std::size_t flips = 0, refused = 0, torn = 0, unnoticed = 0;
  std::string bytes = log.bytes;
  // Every bit of the last group; one bit of each byte before it.
  for (const auto& [at, bit] : flips_for(log, log.boundaries[log.groups() - 1])) {
    const auto mask = static_cast<char>(1 << bit);
    bytes[at] = static_cast<char>(bytes[at] ^ mask);
    dir.reset_to(1, bytes);
    ++flips;
    const std::size_t record = log.record_at(at);
    const std::string where = "bit " + std::to_string(bit) + " of byte " + std::to_string(at) + " (record at " +
                              std::to_string(record) + ", group " + std::to_string(log.group_at(at)) + "): ";
    auto opened = file_storage::open(dir.path(), options());
    if (!opened) {
      ++refused;
      const auto& e = opened.error();
      if (!(e == errc::corrupt_data)) trouble.add(where + "refused with " + e.what());
      if (!mentions(e.message, segment.string()) || !names_offset(e.message, record))
        trouble.add(where + "the error does not name the file and offset " + std::to_string(record) + ": " + e.message);
      if (temp_dir::read(segment) != bytes) trouble.add(where + "a refused open changed the file");
    } else if (const auto& r = opened->recovery(); r.torn_bytes_truncated > 0) {
      // Damage in the last record looks exactly like a torn write; it is cut and reported.
      ++torn;
      const auto size = static_cast<std::size_t>(fs::file_size(segment));
      const std::size_t k = log.boundary_before(size);
      if (log.boundaries[k] != size || size > record)
        trouble.add(where + "truncated to " + std::to_string(size) + ", not to a group boundary before the damage");
      else if (auto got = take_snapshot(*opened, log.now); !(got == log.states[k]))
        trouble.add(where + "state differs from the prefix it was cut to:" + difference(got, log.states[k]));
      if (r.torn_file != segment.string() || !notes_mention(r, segment.string()))
        trouble.add(where + "the torn tail report does not name the file");
    } else {
      ++unnoticed;
      if (!in_reserved_header(at)) trouble.add(where + "the damage went unnoticed");
      if (auto got = take_snapshot(*opened, log.now); !(got == log.states.back()))
        trouble.add(where + "unnoticed, and the state differs:" + difference(got, log.states.back()));
    }
    bytes[at] = static_cast<char>(bytes[at] ^ mask);
  }
  INFO(std::to_string(flips) + " flips of a " + std::to_string(log.bytes.size()) + "-byte segment: " +
       std::to_string(refused) + " refused, " + std::to_string(torn) + " cut as a torn tail, " +
       std::to_string(unnoticed) + " unnoticed (allowed only in the reserved header word)");
  INFO(trouble.first_few());
  CHECK(trouble.found.empty());
  CHECK(flips >= 5000);
  CHECK(refused > 0);
  CHECK(torn > 0);
}

TEST_CASE("with salvage, a flipped bit costs at most the group it hit and nothing is invented",
          "[file][corruption]") {
  const recorded_log log = build_log();
  temp_dir dir("outbox-corruption-salvage");
  const auto segment = dir.segment(1);
  const auto items = items_of_groups(log);
  const auto history = history_of(log);
  std::vector<snapshot> without(log.groups() + 1);
  for (std::size_t g = 1; g <= log.groups(); ++g) without[g] = state_without_group(log, g, dir);
  problems trouble;
  std::size_t flips = 0, skipped = 0, torn = 0;
  std::string bytes = log.bytes;
  // A salvage open reads every record, twice as slow as a refusal: every bit of the last record,
  // one bit of every third byte before it (still several in every field of every record).
  for (const auto& [at, bit] : flips_for(log, log.record_starts.back(), 3)) {
    const auto mask = static_cast<char>(1 << bit);
    bytes[at] = static_cast<char>(bytes[at] ^ mask);
    dir.reset_to(1, bytes);
    ++flips;
    const std::size_t g = log.group_at(at);
    const std::string where = "bit " + std::to_string(bit) + " of byte " + std::to_string(at) + " (group " +
                              std::to_string(g) + "): ";
    auto opened = file_storage::open(dir.path(), options(true));
    bytes[at] = static_cast<char>(bytes[at] ^ mask);
    if (!opened) {
      trouble.add(where + "salvage refused: " + opened.error().what());
      continue;
    }
    const auto& r = opened->recovery();
    skipped += r.salvaged_skips > 0;
    torn += r.torn_bytes_truncated > 0;
    const bool reported = (r.salvaged_skips > 0 || r.torn_bytes_truncated > 0) && notes_mention(r, segment.string());
    if (!reported && !in_reserved_header(at)) trouble.add(where + "salvage did not report what it skipped");
    const auto got = take_snapshot(*opened, log.now);
    if (in_reserved_header(at)) {
      if (!(got == log.states.back())) trouble.add(where + "state differs:" + difference(got, log.states.back()));
    } else if (g == 0) {
      // An unreadable segment header: nothing of the segment can be trusted, nothing is kept.
      if (!got.events.empty() || !got.entities.empty()) trouble.add(where + "kept data past an unreadable header");
    } else {
      // The commit record is all that ends a group: damage to it may also cost the group after,
      // which a reader cannot tell from the rest of the damaged one.
      auto seqs = items.seqs[g - 1];
      auto entities = items.entities[g - 1];
      if (log.record_at(at) == log.record_starts[log.group_end_record(g)] && g < log.groups()) {
        seqs.insert(items.seqs[g].begin(), items.seqs[g].end());
        entities.insert(items.entities[g].begin(), items.entities[g].end());
      }
      if (auto wrong = salvage_problems(got, without[g], seqs, entities, history, log, g); !wrong.empty())
        trouble.add(where + wrong);
    }
  }
  INFO(std::to_string(flips) + " flips: " + std::to_string(skipped) + " skipped, " + std::to_string(torn) +
       " cut as a torn tail");
  INFO(trouble.first_few());
  CHECK(trouble.found.empty());
  CHECK(flips >= log.bytes.size() / 3);
  CHECK(skipped > 0);
  CHECK(torn > 0);
}

// Known bug (reported, not yet fixed in log_format.hpp): after skipping an unreadable record,
// scan_segment clears only the records of the group read so far and then applies the rest of
// that group when its commit arrives, so a damaged group is applied in part: an entity row can
// be kept without the event written in the same transaction. Remove once fixed.
TEST_CASE("with salvage, a damaged record drops its whole group, never a part of it",
          "[file][corruption]") {
  temp_dir dir("outbox-corruption-salvage-group");
  {
    // The smallest case: one entity and its event, one transaction. Damage the event's record.
    storage_fixture f;
    {
      auto s = file_storage::open(dir.path(), options()).value();
      REQUIRE(s.commit(f.make_entity_change("steps", "s1", "alice")).has_value());
    }
    std::string bytes = temp_dir::read(dir.segment(1));
    REQUIRE(static_cast<wire::record_type>(bytes[wire::header_size + wire::frame_overhead]) == wire::record_type::event);
    bytes[wire::header_size + wire::frame_overhead] ^= 0x40;
    dir.reset_to(1, bytes);
    auto salvaged = file_storage::open(dir.path(), options(true)).value();
    CHECK(salvaged.recovery().salvaged_skips == 1);
    CHECK_FALSE(salvaged.find_entity("steps", "s1").value().has_value());  // not without its event
  }

  const recorded_log log = build_log();
  problems trouble;
  // Every record but the commits (damage to a commit may cost the next group too, see above).
  for (std::size_t i = 0; i < log.record_starts.size(); ++i) {
    const std::size_t start = log.record_starts[i];
    const std::size_t g = log.group_at(start);
    if (i == log.group_end_record(g)) continue;
    const snapshot want = state_without_group(log, g, dir);
    std::string bytes = log.bytes;
    char& type = bytes[start + wire::frame_overhead];
    type = static_cast<char>(type ^ 0x40);  // no record type has bit 6 set
    dir.reset_to(1, bytes);
    auto opened = file_storage::open(dir.path(), options(true));
    if (!opened) {
      trouble.add("record at " + std::to_string(start) + ": salvage refused: " + opened.error().what());
      continue;
    }
    if (auto got = take_snapshot(*opened, log.now); !(got == want))
      trouble.add("record at " + std::to_string(start) + " (group " + std::to_string(g) + "):" + difference(got, want));
  }
  INFO(trouble.first_few());
  CHECK(trouble.found.empty());
}

// ---- damaged and leftover files --------------------------------------------------------------

TEST_CASE("a garbage segment header fails the open naming the file; salvage opens it and reports the loss",
          "[file][corruption]") {
  const recorded_log log = build_log();
  temp_dir dir("outbox-corruption-header");
  const auto segment = dir.segment(1);

  SECTION("garbage") {
    std::string bytes = log.bytes;
    bytes.replace(0, wire::header_size, "NOT AN OUTBOX LG");
    dir.reset_to(1, bytes);
    auto opened = file_storage::open(dir.path(), options());
    REQUIRE_FALSE(opened.has_value());
    CHECK(opened.error() == errc::corrupt_data);
    CHECK(mentions(opened.error().message, segment.string()));
    CHECK(names_offset(opened.error().message, 0));
    CHECK(temp_dir::read(segment) == bytes);

    auto salvaged = file_storage::open(dir.path(), options(true));
    REQUIRE(salvaged.has_value());
    CHECK(salvaged->recovery().salvaged_skips == 1);
    CHECK(notes_mention(salvaged->recovery(), segment.string()));
    const auto got = take_snapshot(*salvaged, log.now);
    CHECK(got.events.empty());
    CHECK(got.entities.empty());
  }
  SECTION("a format version this reader does not know") {
    std::string bytes = log.bytes;
    bytes[wire::magic.size()] = 2;
    dir.reset_to(1, bytes);
    auto opened = file_storage::open(dir.path(), options());
    REQUIRE_FALSE(opened.has_value());
    CHECK((opened.error() == errc::corrupt_data || opened.error() == errc::schema_too_new));
    CHECK(mentions(opened.error().message, segment.string()));
    CHECK(temp_dir::read(segment) == bytes);
  }
  SECTION("cut inside the header") {
    for (std::size_t cut = 1; cut < wire::header_size; ++cut) {
      INFO("cut at " << cut);
      dir.reset_to(1, log.bytes.substr(0, cut));
      auto opened = file_storage::open(dir.path(), options());
      if (opened) {
        // Treated as a segment whose creation was cut short: started again, empty.
        const auto got = take_snapshot(*opened, log.now);
        CHECK(got.events.empty());
        CHECK(fs::file_size(segment) == wire::header_size);
      } else {
        CHECK(opened.error() == errc::corrupt_data);
        CHECK(mentions(opened.error().message, segment.string()));
        CHECK(temp_dir::read(segment) == log.bytes.substr(0, cut));
      }
    }
  }
}

// Known bug (reported, not yet fixed in file.hpp): a salvage open keeps a segment whose header
// it could not read as the active segment and appends after the garbage, where no later open,
// with salvage or without, can read it: acknowledged events are lost. Remove once fixed.
TEST_CASE("events appended after a salvage open past a garbage header survive the next open",
          "[file][corruption]") {
  const recorded_log log = build_log();
  temp_dir dir("outbox-corruption-header-append");
  std::string bytes = log.bytes;
  bytes.replace(0, wire::header_size, "NOT AN OUTBOX LG");
  dir.reset_to(1, bytes);
  std::vector<event> more = {fresh_event("after-salvage")};
  {
    auto salvaged = file_storage::open(dir.path(), options(true));
    REQUIRE(salvaged.has_value());
    REQUIRE(outbox::testing::append_keeping(*salvaged, more).has_value());
  }
  auto again = file_storage::open(dir.path(), options(true));
  REQUIRE(again.has_value());
  CHECK(again->find(more[0].id).value().has_value());
}

TEST_CASE("zero-length segments are started again or skipped, and lose nothing", "[file][corruption]") {
  const recorded_log log = build_log();
  temp_dir dir("outbox-corruption-empty");
  std::vector<event> more = {fresh_event("after")};
  auto append_and_reopen = [&](const snapshot& want) {
    {
      auto s = file_storage::open(dir.path(), options());
      REQUIRE(s.has_value());
      CHECK(s->recovery().notes.empty());
      CHECK(take_snapshot(*s, log.now) == want);
      REQUIRE(outbox::testing::append_keeping(*s, more).has_value());
    }
    auto again = file_storage::open(dir.path(), options());
    REQUIRE(again.has_value());
    CHECK(again->recovery().notes.empty());
    CHECK(again->find(more[0].id).value().has_value());
  };

  SECTION("the only segment") {
    dir.reset_to(1, "");
    append_and_reopen(log.states.front());
    CHECK(temp_dir::read(dir.segment(1)).substr(0, wire::header_size) == wire::segment_header());
  }
  SECTION("the last segment, after a whole one") {
    dir.reset_to(1, log.bytes);
    temp_dir::write(dir.segment(2), "");
    append_and_reopen(log.states.back());
    CHECK(temp_dir::read(dir.segment(1)) == log.bytes);
    CHECK(fs::file_size(dir.segment(2)) > wire::header_size);
  }
  SECTION("a sealed segment before the last") {
    dir.reset_to(1, "");
    temp_dir::write(dir.segment(2), log.bytes);
    append_and_reopen(log.states.back());
  }
}

TEST_CASE("a damaged sealed segment is corruption, never a torn tail to cut", "[file][corruption]") {
  const recorded_log log = build_log();
  temp_dir dir("outbox-corruption-sealed");
  const auto sealed = dir.segment(1);
  problems trouble;
  // Cut inside the last group of a segment that is followed by another: no crash does that.
  for (std::size_t cut = log.boundaries[log.groups() - 1] + 1; cut < log.bytes.size(); ++cut) {
    const std::string where = "sealed segment cut at " + std::to_string(cut) + ": ";
    const std::string bytes = log.bytes.substr(0, cut);
    dir.reset_to(1, bytes);
    temp_dir::write(dir.segment(2), wire::segment_header());
    auto opened = file_storage::open(dir.path(), options());
    if (opened) {
      trouble.add(where + "opened");
      continue;
    }
    if (!(opened.error() == errc::corrupt_data) || !mentions(opened.error().message, sealed.string()))
      trouble.add(where + "wrong error: " + opened.error().what());
    if (temp_dir::read(sealed) != bytes) trouble.add(where + "the sealed segment was changed");

    // Salvage keeps every whole group.
    auto salvaged = file_storage::open(dir.path(), options(true));
    if (!salvaged) {
      trouble.add(where + "salvage refused: " + salvaged.error().what());
      continue;
    }
    if (auto got = take_snapshot(*salvaged, log.now); !(got == log.states[log.groups() - 1]))
      trouble.add(where + "salvaged state differs:" + difference(got, log.states[log.groups() - 1]));
  }
  INFO(trouble.first_few());
  CHECK(trouble.found.empty());
}

// Known bug (reported, not yet fixed in file.hpp): a sealed segment that ends between two
// records of a group has no unreadable record, so replay() notes nothing, and with salvage the
// "incomplete group in a sealed segment" error is skipped without a note either: the group is
// dropped without a word in recovery(). Remove once fixed.
TEST_CASE("salvage reports an incomplete group it drops from a sealed segment", "[file][corruption]") {
  const recorded_log log = build_log();
  temp_dir dir("outbox-corruption-sealed-quiet");
  const auto sealed = dir.segment(1);
  std::size_t cuts = 0;
  for (const std::size_t cut : log.record_starts) {
    if (cut <= log.boundaries[log.groups() - 1]) continue;  // only inside the last group
    INFO("sealed segment cut at the record boundary " << cut);
    dir.reset_to(1, log.bytes.substr(0, cut));
    temp_dir::write(dir.segment(2), wire::segment_header());
    auto salvaged = file_storage::open(dir.path(), options(true));
    REQUIRE(salvaged.has_value());
    CHECK(take_snapshot(*salvaged, log.now) == log.states[log.groups() - 1]);
    CHECK(notes_mention(salvaged->recovery(), sealed.string()));
    ++cuts;
  }
  CHECK(cuts > 0);
}

TEST_CASE("a leftover .tmp from a compaction that never finished is ignored and removed", "[file][corruption]") {
  const recorded_log log = build_log();
  temp_dir dir("outbox-corruption-tmp");
  dir.reset_to(1, log.bytes);
  // A whole, valid snapshot segment that never got renamed: it must not be read.
  std::string other = wire::segment_header();
  wire::put_marker(other, wire::record_type::snapshot, 1000);
  wire::put_marker(other, wire::record_type::commit, 1000);
  const auto tmp = fs::path(dir.segment(2).string() + ".tmp");
  temp_dir::write(tmp, other);
  const auto garbage = fs::path(dir.segment(3).string() + ".tmp");
  temp_dir::write(garbage, "half a segm");
  auto s = file_storage::open(dir.path(), options());
  REQUIRE(s.has_value());
  CHECK(s->recovery().notes.empty());
  CHECK(take_snapshot(*s, log.now) == log.states.back());
  CHECK_FALSE(fs::exists(tmp));
  CHECK_FALSE(fs::exists(garbage));
  CHECK_FALSE(fs::exists(dir.segment(2)));
}

TEST_CASE("segments a compaction left behind before its snapshot are deleted and never read",
          "[file][corruption]") {
  const recorded_log log = build_log();
  temp_dir dir("outbox-corruption-compaction");
  dir.reset_to(1, log.bytes);
  {
    auto s = file_storage::open(dir.path(), options());
    REQUIRE(s.has_value());
    REQUIRE(s->compact().has_value());
    CHECK(take_snapshot(*s, log.now) == log.states.back());
  }
  REQUIRE_FALSE(fs::exists(dir.segment(1)));
  REQUIRE(fs::exists(dir.segment(2)));
  const std::string snapshot_segment = temp_dir::read(dir.segment(2));
  // A crash between the rename and the deletion leaves the old segments; an older one may even
  // be damaged. Neither may be read.
  temp_dir::write(dir.segment(1), log.bytes);
  temp_dir::write(dir.segment(0), "old, damaged, and long since compacted away");
  std::vector<event> more = {fresh_event("after-compaction")};
  {
    auto s = file_storage::open(dir.path(), options());
    REQUIRE(s.has_value());
    CHECK(s->recovery().notes.empty());
    CHECK(take_snapshot(*s, log.now) == log.states.back());
    CHECK_FALSE(fs::exists(dir.segment(0)));
    CHECK_FALSE(fs::exists(dir.segment(1)));
    CHECK(temp_dir::read(dir.segment(2)) == snapshot_segment);
    REQUIRE(outbox::testing::append_keeping(*s, more).has_value());
  }
  auto again = file_storage::open(dir.path(), options());
  REQUIRE(again.has_value());
  CHECK(again->find(more[0].id).value().has_value());
  auto rest = take_snapshot(*again, log.now);
  rest.events.erase(again->find(more[0].id).value()->seq);
  CHECK(rest.events == log.states.back().events);
  CHECK(rest.entities == log.states.back().entities);
}

// ---- logs that contradict themselves ---------------------------------------------------------

// Checksums catch damage, not a log this storage never wrote: one whose every record is whole
// but which says two live events share an id, or two rows of a user share a natural key. The
// index cannot hold either (a lookup would find one of the two, and dropping one would unindex
// the other), so opening refuses such a log, naming the group, and salvage leaves the
// contradicting record out.
TEST_CASE("a checksummed log that contradicts itself is refused, naming the group, or salvaged without it",
          "[file][corruption]") {
  temp_dir dir("outbox-corruption-contradiction");
  storage_fixture f;
  const event first = fresh_event("k1");
  event twin = fresh_event("k2");
  twin.id = first.id;  // the same id again, under the next seq
  outbox::entity_record row{.collection = "weight", .id = "w1", .user_id = "carol", .natural_key = "day-1",
                            .payload = "71.4", .occurred_at = f.t0, .sync = outbox::sync_status::pending,
                            .remote_id = {}, .sync_error = {}, .last_event = {}, .version = 1,
                            .created_at = f.t0, .updated_at = f.t0};
  outbox::entity_record rival = row;
  rival.id = "w2";  // another row claiming carol's day-1

  for (const bool events : {true, false}) {
    INFO((events ? "two events with one id" : "two rows with one natural key"));
    std::string log = wire::segment_header();
    auto group = [&](auto&& put) {
      const std::size_t start = log.size();
      put();
      wire::put_marker(log, wire::record_type::commit, 3);
      return start;
    };
    event a = first, b = twin;
    a.seq = 1;
    b.seq = 2;
    group([&] { events ? wire::put_event(log, a) : wire::put_entity(log, row); });
    const std::size_t second = group([&] { events ? wire::put_event(log, b) : wire::put_entity(log, rival); });
    event c = fresh_event("k3");
    c.seq = 3;
    group([&] { wire::put_event(log, c); });  // a group after the contradiction: kept by salvage
    dir.reset_to(1, log);

    const auto refused = file_storage::open(dir.path(), options());
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().code == errc::corrupt_data);
    CHECK(mentions(refused.error().message, dir.segment(1).string()));
    CHECK(names_offset(refused.error().message, second));
    CHECK(temp_dir::read(dir.segment(1)) == log);  // refused, untouched

    auto salvaged = file_storage::open(dir.path(), options(true));
    REQUIRE(salvaged.has_value());
    CHECK(salvaged->recovery().salvaged_skips == 1);
    CHECK(notes_mention(salvaged->recovery(), dir.segment(1).string()));
    if (events) {
      const auto kept = salvaged->find(first.id).value();
      REQUIRE(kept.has_value());
      CHECK(kept->seq == 1);
      CHECK(salvaged->query({.limit = 10}).value().size() == 2);  // the first and the third group's
    } else {
      CHECK(salvaged->find_entity_by_key("weight", "carol", "day-1").value()->id == "w1");
      CHECK_FALSE(salvaged->find_entity("weight", "w2").value().has_value());
    }
  }
}
