#pragma once
/// \file
/// The file storage's on-disk format, and its reader, which must accept any bytes without
/// undefined behaviour (a libFuzzer target drives it).
///
/// A segment file: a 16-byte header ("OUTBOXLG", u32 format version, u32 zero), then records.
/// A record: u32 length of the body, u32 CRC-32C of the body, the body (one type byte, then its
/// fields). All integers little-endian; strings as u32 length + bytes. Records belong to a
/// group that ends with a `commit` record; a group is applied whole or not at all.

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "outbox/detail/crc32c.hpp"
#include "outbox/entity.hpp"
#include "outbox/event.hpp"

namespace outbox::detail::log {

inline constexpr std::string_view magic = "OUTBOXLG";
inline constexpr std::uint32_t format_version = 1;
inline constexpr std::size_t header_size = 16;
inline constexpr std::size_t frame_overhead = 8;            // length + crc
inline constexpr std::uint32_t max_body = 256U << 20;        // a larger length is corruption
inline constexpr std::uint64_t max_seq = 1ULL << 62;         // sequence numbers never get near this
inline constexpr int max_attempts_value = 1 << 30;           // counts beyond this are corruption

enum class record_type : std::uint8_t {
  event = 1,           ///< an event's whole state
  event_removed = 2,   ///< seq
  entity = 3,          ///< an entity row's whole state
  entity_removed = 4,  ///< collection, id
  commit = 5,          ///< ends a group; carries the next seq
  snapshot = 6,        ///< starts a compacted segment: forget everything before it
};

// ---- writing ---------------------------------------------------------------------------------

/// Little-endian fixed-width integers into `at`, which has room for them.
template <class Int>
inline void store_le(char* at, Int v) noexcept {
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(at, &v, sizeof v);
  } else {
    for (std::size_t i = 0; i < sizeof v; ++i) at[i] = static_cast<char>(static_cast<std::uint64_t>(v) >> (8 * i));
  }
}

/// Writes fields through a `Sink`: `measure` counts bytes, `cursor` stores them into a buffer
/// already sized for them. A record is filled twice, once with each, so its buffer grows once.
template <class Sink>
class basic_writer {
 public:
  explicit basic_writer(Sink sink) : sink_(sink) {}

  void u8(std::uint8_t v) { sink_.put(v); }
  void u32(std::uint32_t v) { sink_.put(v); }
  void u64(std::uint64_t v) { sink_.put(v); }
  void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
  void str(std::string_view s) {
    u32(static_cast<std::uint32_t>(s.size()));
    sink_.bytes(s);
  }
  void time(timestamp t) { i64(to_micros(t)); }
  void id(const event_id& id) {
    u64(id.high);
    u64(id.low);
  }
  [[nodiscard]] const Sink& sink() const noexcept { return sink_; }

 private:
  Sink sink_;
};

struct measure {
  std::size_t size = 0;
  template <class Int>
  void put(Int) noexcept { size += sizeof(Int); }
  void bytes(std::string_view s) noexcept { size += s.size(); }
};

struct cursor {
  char* at;
  template <class Int>
  void put(Int v) noexcept {
    store_le(at, v);
    at += sizeof(Int);
  }
  void bytes(std::string_view s) noexcept {
    if (!s.empty()) std::memcpy(at, s.data(), s.size());
    at += s.size();
  }
};

/// Appends to a string (segment headers, hand-made test records).
struct append_sink {
  std::string* out;
  template <class Int>
  void put(Int v) {
    char b[sizeof(Int)];
    store_le(b, v);
    out->append(b, sizeof b);
  }
  void bytes(std::string_view s) { out->append(s); }
};

class writer : public basic_writer<append_sink> {
 public:
  explicit writer(std::string& out) : basic_writer<append_sink>(append_sink{&out}) {}
};

/// Appends one framed record whose body `fill` writes after the type byte: the fields are
/// measured, the string grows once, and they are stored in place.
template <class Fill>
void append_record(std::string& out, record_type type, Fill&& fill) {
  basic_writer<measure> m(measure{1});
  fill(m);
  const std::size_t length = m.sink().size;
  const std::size_t start = out.size();
  out.resize(start + frame_overhead + length);
  char* body = out.data() + start + frame_overhead;
  basic_writer<cursor> w(cursor{body});
  w.u8(static_cast<std::uint8_t>(type));
  fill(w);
  store_le(out.data() + start, static_cast<std::uint32_t>(length));
  store_le(out.data() + start + 4, crc32c(std::string_view(body, length)));
}

template <class Writer>
void event_fields(Writer& w, const event& e) {
  w.u64(e.seq);
  w.id(e.id);
  w.str(e.type);
  w.str(e.entity_id);
  w.str(e.entity_type);
  w.str(e.ordering_key);
  w.str(e.user_id);
  w.str(e.payload);
  w.i64(e.priority);
  w.u8(static_cast<std::uint8_t>(e.status));
  w.i64(e.attempts);
  w.i64(e.max_attempts);
  w.time(e.created_at);
  w.time(e.updated_at);
  w.time(e.retry_after);
  w.time(e.completed_at);
  w.str(e.last_error);
  w.str(e.remote_id);
  w.u64(e.lease);
  w.time(e.lease_until);
}

inline void put_event(std::string& out, const event& e) {
  append_record(out, record_type::event, [&](auto& w) { event_fields(w, e); });
}

inline void put_event_removed(std::string& out, std::uint64_t seq) {
  append_record(out, record_type::event_removed, [&](auto& w) { w.u64(seq); });
}

template <class Writer>
void entity_fields(Writer& w, const entity_record& r) {
  w.str(r.collection);
  w.str(r.id);
  w.str(r.user_id);
  w.str(r.natural_key);
  w.str(r.payload);
  w.time(r.occurred_at);
  w.u8(static_cast<std::uint8_t>(r.sync));
  w.str(r.remote_id);
  w.str(r.sync_error);
  w.id(r.last_event);
  w.u64(r.version);
  w.time(r.created_at);
  w.time(r.updated_at);
}

inline void put_entity(std::string& out, const entity_record& r) {
  append_record(out, record_type::entity, [&](auto& w) { entity_fields(w, r); });
}

/// What `put_event` / `put_entity` would append, in bytes, without writing anything.
[[nodiscard]] inline std::size_t event_record_size(const event& e) {
  basic_writer<measure> m(measure{frame_overhead + 1});
  event_fields(m, e);
  return m.sink().size;
}
[[nodiscard]] inline std::size_t entity_record_size(const entity_record& r) {
  basic_writer<measure> m(measure{frame_overhead + 1});
  entity_fields(m, r);
  return m.sink().size;
}

inline void put_entity_removed(std::string& out, std::string_view collection, std::string_view id) {
  append_record(out, record_type::entity_removed, [&](auto& w) {
    w.str(collection);
    w.str(id);
  });
}

inline void put_marker(std::string& out, record_type type, std::uint64_t next_seq) {
  append_record(out, type, [&](auto& w) { w.u64(next_seq); });
}

inline std::string segment_header() {
  std::string h(magic);
  writer w(h);
  w.u32(format_version);
  w.u32(0);
  return h;
}

// ---- reading ---------------------------------------------------------------------------------

/// Bounds-checked field reader; any read past the end makes it fail, and it stays failed.
class reader {
 public:
  explicit reader(std::string_view bytes) : bytes_(bytes) {}

  [[nodiscard]] bool ok() const noexcept { return ok_; }
  [[nodiscard]] bool at_end() const noexcept { return pos_ == bytes_.size(); }

  std::uint8_t u8() {
    if (!need(1)) return 0;
    return static_cast<std::uint8_t>(bytes_[pos_++]);
  }
  std::uint32_t u32() {
    if (!need(4)) return 0;
    return load<std::uint32_t>();
  }
  std::uint64_t u64() {
    if (!need(8)) return 0;
    return load<std::uint64_t>();
  }
  std::int64_t i64() { return static_cast<std::int64_t>(u64()); }
  int small_int() {
    const std::int64_t v = i64();
    if (v < INT32_MIN || v > INT32_MAX) ok_ = false;
    return ok_ ? static_cast<int>(v) : 0;
  }
  std::string str() { return std::string(view()); }
  /// A string field as a view into the bytes read.
  std::string_view view() {
    const std::uint32_t n = u32();
    if (!need(n)) return {};
    const std::string_view s = bytes_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  /// Times are microseconds within +-146 years of 1970: far enough for any real schedule, and
  /// near enough that converting to nanoseconds and subtracting two of them cannot overflow.
  timestamp time() {
    const std::int64_t v = i64();
    constexpr std::int64_t limit = INT64_MAX / 2000;
    if (v > limit || v < -limit) ok_ = false;
    return ok_ ? from_micros(v) : timestamp{};
  }
  event_id id() {
    event_id id;
    id.high = u64();
    id.low = u64();
    return id;
  }

 private:
  template <class Int>
  Int load() noexcept {  // need(sizeof(Int)) has been checked
    Int v = 0;
    if constexpr (std::endian::native == std::endian::little) {
      std::memcpy(&v, bytes_.data() + pos_, sizeof v);
    } else {
      for (std::size_t i = 0; i < sizeof v; ++i)
        v |= static_cast<Int>(static_cast<Int>(static_cast<unsigned char>(bytes_[pos_ + i])) << (8 * i));
    }
    pos_ += sizeof v;
    return v;
  }
  bool need(std::size_t n) {
    if (!ok_ || bytes_.size() - pos_ < n) ok_ = false;
    return ok_;
  }
  std::string_view bytes_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

struct removed_entity {
  std::string collection;
  std::string id;
};
struct marker {
  record_type type;
  std::uint64_t next_seq;
};
/// A completed event's record left undecoded by a scan that asked for it (scan_segment's
/// `keep_completed`): what an index of completed events needs, and where the record's body is
/// in the bytes scanned. The strings view those bytes.
struct completed_record {
  std::uint64_t seq = 0;
  event_id id{};
  timestamp completed_at{};
  std::string_view user_id, entity_id, type;
  std::size_t body = 0;       ///< offset of the body in the scanned bytes
  std::uint32_t body_size = 0;
};
/// In such a scan, records [first, first + count) of segment_scan::completed, in log order, at
/// this place in their group.
struct completed_run {
  std::size_t first = 0;
  std::size_t count = 0;
};
using record = std::variant<event, std::uint64_t /*removed seq*/, entity_record, removed_entity, marker, completed_run>;

/// An event record's fields, its strings viewing the record's bytes: the one statement of the
/// event record's layout and validity, which `decode` and the scan of completed events share.
struct event_view {
  std::uint64_t seq = 0;
  event_id id{};
  std::string_view type, entity_id, entity_type, ordering_key, user_id, payload;
  int priority = 0;
  status state = status::pending;
  int attempts = 0;
  int max_attempts = 0;
  timestamp created_at{}, updated_at{}, retry_after{}, completed_at{};
  std::string_view last_error, remote_id;
  std::uint64_t lease = 0;
  timestamp lease_until{};

  /// Reads the fields after the type byte; false if they do not describe a possible event
  /// (a record that decodes but describes an impossible event is corruption too). The caller
  /// checks that the reader is still ok and at the end.
  bool read(reader& r) {
    seq = r.u64();
    id = r.id();
    type = r.view();
    entity_id = r.view();
    entity_type = r.view();
    ordering_key = r.view();
    user_id = r.view();
    payload = r.view();
    priority = r.small_int();
    const std::uint8_t st = r.u8();
    attempts = r.small_int();
    max_attempts = r.small_int();
    created_at = r.time();
    updated_at = r.time();
    retry_after = r.time();
    completed_at = r.time();
    last_error = r.view();
    remote_id = r.view();
    lease = r.u64();
    lease_until = r.time();
    if (st >= status_count || seq == 0 || seq >= max_seq || id.is_nil() || attempts < 0 ||
        attempts > max_attempts_value || max_attempts < 1 || max_attempts > max_attempts_value)
      return false;
    state = static_cast<status>(st);
    return true;
  }

  [[nodiscard]] event materialise() const {
    event e;
    e.seq = seq;
    e.id = id;
    e.type = type;
    e.entity_id = entity_id;
    e.entity_type = entity_type;
    e.ordering_key = ordering_key;
    e.user_id = user_id;
    e.payload = payload;
    e.priority = priority;
    e.status = state;
    e.attempts = attempts;
    e.max_attempts = max_attempts;
    e.created_at = created_at;
    e.updated_at = updated_at;
    e.retry_after = retry_after;
    e.completed_at = completed_at;
    e.last_error = last_error;
    e.remote_id = remote_id;
    e.lease = lease;
    e.lease_until = lease_until;
    return e;
  }
};

/// Decodes one record body (type byte included). nullopt: the body is not a valid record.
[[nodiscard]] inline std::optional<record> decode(std::string_view body) {
  reader r(body);
  const auto type = static_cast<record_type>(r.u8());
  record out;
  switch (type) {
    case record_type::event: {
      event_view e;
      if (!e.read(r) || !r.ok() || !r.at_end()) return std::nullopt;
      out = e.materialise();
      break;
    }
    case record_type::event_removed: {
      const std::uint64_t seq = r.u64();
      if (seq == 0 || seq >= max_seq) return std::nullopt;
      out = seq;
      break;
    }
    case record_type::entity: {
      entity_record e;
      e.collection = r.str();
      e.id = r.str();
      e.user_id = r.str();
      e.natural_key = r.str();
      e.payload = r.str();
      e.occurred_at = r.time();
      const std::uint8_t sync = r.u8();
      e.remote_id = r.str();
      e.sync_error = r.str();
      e.last_event = r.id();
      e.version = r.u64();
      e.created_at = r.time();
      e.updated_at = r.time();
      if (sync > 1 || e.version == 0) return std::nullopt;
      e.sync = static_cast<sync_status>(sync);
      out = std::move(e);
      break;
    }
    case record_type::entity_removed: {
      removed_entity x;
      x.collection = r.str();
      x.id = r.str();
      out = std::move(x);
      break;
    }
    case record_type::commit:
    case record_type::snapshot: {
      const std::uint64_t next_seq = r.u64();
      if (next_seq >= max_seq) return std::nullopt;
      out = marker{type, next_seq};
      break;
    }
    default: return std::nullopt;
  }
  if (!r.ok() || !r.at_end()) return std::nullopt;
  return out;
}

/// If `body` is a valid record of a completed event, appends it to `completed` (`body_at` is
/// where the body starts in the bytes scanned) and answers true, building no strings for it.
/// False for anything else: `decode` reads that.
[[nodiscard]] inline bool decode_completed(std::string_view body, std::size_t body_at,
                                           std::vector<completed_record>& completed) {
  if (body.empty() || static_cast<record_type>(body[0]) != record_type::event) return false;
  reader r(body.substr(1));
  event_view e;
  if (!e.read(r) || !r.ok() || !r.at_end() || e.state != status::completed) return false;
  completed.push_back({e.seq, e.id, e.completed_at, e.user_id, e.entity_id, e.type, body_at, static_cast<std::uint32_t>(body.size())});
  return true;
}

/// Where the next frame starting at `pos` ends, if a whole, checksummed frame is there.
[[nodiscard]] inline std::optional<std::size_t> frame_end(std::string_view bytes, std::size_t pos,
                                                          std::string_view* body_out = nullptr) {
  if (bytes.size() < pos || bytes.size() - pos < frame_overhead) return std::nullopt;
  reader r(bytes.substr(pos, frame_overhead));
  const std::uint32_t length = r.u32();
  const std::uint32_t crc = r.u32();
  if (length == 0 || length > max_body || bytes.size() - pos - frame_overhead < length) return std::nullopt;
  const std::string_view body = bytes.substr(pos + frame_overhead, length);
  if (crc32c(body) != crc) return std::nullopt;
  if (body_out) *body_out = body;
  return pos + frame_overhead + length;
}

/// Whether the unreadable bytes from `from` up to a readable record at `to` are what a write cut
/// short by a power loss leaves in a segment's last, unsynced stretch: a 512-byte sector of the
/// write that never reached the disk reads as the zeros that were there before (preallocated,
/// or past the end), from `from` or the sector's start up to the sector's end. The kernel and
/// the disk write a write's sectors in any order, so later ones, readable records among them,
/// may have arrived. Damage that is not such a sector of zeros stays corruption.
[[nodiscard]] inline bool lost_sector_between(std::string_view bytes, std::size_t from, std::size_t to) noexcept {
  constexpr std::size_t sector = 512;
  for (std::size_t end = (from / sector + 1) * sector; end <= to && end <= bytes.size(); end += sector) {
    const std::size_t start = std::max(from, end - sector);
    if (bytes.substr(start, end - start).find_first_not_of('\0') == std::string_view::npos) return true;
  }
  return false;
}

/// The outcome of reading one segment.
struct segment_scan {
  std::vector<std::vector<record>> groups;  ///< complete groups, in order
  std::vector<std::size_t> group_offsets;   ///< where each of them starts
  std::size_t valid_end = header_size;      ///< end of the last complete group
  std::optional<std::size_t> bad_offset;    ///< where the first unreadable record starts
  bool valid_after_bad = false;             ///< a readable record exists after the bad one
  std::size_t readable_after = 0;           ///< if so, where the first of them starts
  bool bad_header = false;
  bool snapshot = false;                    ///< the segment starts with a snapshot record
  /// With `keep_completed`: the completed events' records of `groups`, which hold completed_runs
  /// of them.
  std::vector<completed_record> completed;
};

/// Reads a whole segment. With `salvage`, an unreadable stretch is skipped to the next readable
/// record (the group it interrupted is dropped); without it, reading stops at the first one.
/// With `keep_completed`, completed events are not decoded into `event`s but listed in
/// `completed` (decode_keeping_completed); everything else is read the same.
[[nodiscard]] inline segment_scan scan_segment(std::string_view bytes, bool salvage, bool keep_completed = false) {
  segment_scan scan;
  if (bytes.size() < header_size || bytes.substr(0, magic.size()) != magic) {
    scan.bad_header = !bytes.empty();
    scan.valid_end = 0;
    if (scan.bad_header) scan.bad_offset = 0;
    return scan;
  }
  {
    reader r(bytes.substr(magic.size(), 8));
    if (r.u32() != format_version) {
      scan.bad_header = true;
      scan.bad_offset = 0;
      scan.valid_end = 0;
      return scan;
    }
  }
  std::vector<record> group;
  std::size_t group_start = header_size;
  std::size_t pos = header_size;
  std::size_t completed_committed = 0;  // scan.completed of whole groups
  bool first = true;
  bool dropping = false;  // after a skip, up to the next commit: the rest of a damaged group
  while (pos < bytes.size()) {
    std::string_view body;
    auto end = frame_end(bytes, pos, &body);
    if (end && keep_completed && decode_completed(body, pos + frame_overhead, scan.completed)) {
      if (group.empty()) group_start = pos;
      first = false;  // a segment that starts with an event is no snapshot
      // Consecutive completed events make one run.
      auto* run = group.empty() ? nullptr : std::get_if<completed_run>(&group.back());
      if (run && run->first + run->count + 1 == scan.completed.size())
        ++run->count;
      else
        group.emplace_back(completed_run{scan.completed.size() - 1, 1});
      pos = *end;
      continue;
    }
    std::optional<record> rec;
    if (end) rec = decode(body);
    if (!rec) {
      if (!scan.bad_offset) scan.bad_offset = pos;
      // Is there any readable record further on? Then this is not a torn tail.
      std::size_t next = pos + 1;
      for (; next + frame_overhead <= bytes.size(); ++next) {
        std::string_view b;
        if (frame_end(bytes, next, &b) && decode(b)) break;
      }
      const bool found = next + frame_overhead <= bytes.size();
      if (found && !scan.valid_after_bad) scan.readable_after = next;
      scan.valid_after_bad = scan.valid_after_bad || found;
      if (!salvage || !found) break;
      group.clear();  // the interrupted group cannot be trusted whole
      scan.completed.resize(completed_committed);
      dropping = true;
      pos = next;
      continue;
    }
    if (first) {
      const auto* m = std::get_if<marker>(&*rec);
      scan.snapshot = m && m->type == record_type::snapshot;
      first = false;
    }
    if (group.empty()) group_start = pos;
    pos = *end;
    const auto* m = std::get_if<marker>(&*rec);
    const bool commit = m && m->type == record_type::commit;
    group.push_back(std::move(*rec));
    if (commit) {
      if (!dropping) {
        scan.groups.push_back(std::move(group));
        scan.group_offsets.push_back(group_start);
        completed_committed = scan.completed.size();
      } else {
        scan.completed.resize(completed_committed);
      }
      dropping = false;
      group.clear();
      scan.valid_end = pos;
    }
  }
  scan.completed.resize(completed_committed);  // an unfinished group's
  return scan;
}

}  // namespace outbox::detail::log
