#pragma once
/// \file
/// What the conformance chapters build on: `storage_fixture` makes events, outcomes and entity
/// changes; `append_keeping` appends while keeping the caller's copies; the helpers in
/// `outbox::testing::conformance` wrap a storage call in the checks every chapter repeats.
/// Requires <catch2/catch.hpp>; nothing else in outbox depends on Catch2.

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <outbox/outbox.hpp>  // the single header provides it too

namespace outbox::testing {

/// Helpers the suite (and storage tests of your own) build events and outcomes with.
class storage_fixture {
 public:
  timestamp t0 = timestamp(std::chrono::seconds(1767225600));  // 2026-01-01T00:00:00Z
  event_id_generator ids{42};

  [[nodiscard]] event make(std::string user, std::string key, int priority = priority::normal,
                           std::string type = "test.event") {
    event e;
    e.id = ids.next(t0);
    e.type = std::move(type);
    e.entity_id = key;
    e.ordering_key = std::move(key);
    e.user_id = std::move(user);
    e.payload = R"({"n":)" + std::to_string(++made_) + "}";
    e.priority = priority;
    e.max_attempts = 5;
    e.created_at = t0;
    e.updated_at = t0;
    return e;
  }

  [[nodiscard]] claim_request claim_at(std::string_view user, timestamp now, std::size_t limit = 10,
                                       std::chrono::seconds lease = std::chrono::seconds(60)) const {
    return {user, now, now + lease, limit};
  }

  // Outcomes as the outbox builds them (detail/lifecycle.hpp): the suite feeds storages the
  // same values the engine does.
  [[nodiscard]] static outcome complete(const event& e, timestamp at, std::string remote_id = "r") {
    return outbox::detail::lifecycle::delivered(e, at, std::move(remote_id));
  }
  [[nodiscard]] static outcome fail(const event& e, timestamp at, timestamp retry_after, std::string why = "500") {
    return outbox::detail::lifecycle::retry(e, at, std::move(why), retry_after);
  }
  [[nodiscard]] static outcome kill(const event& e, timestamp at, std::string why = "400") {
    return outbox::detail::lifecycle::dead(e, at, std::move(why));
  }
  [[nodiscard]] static outcome release(const event& e, timestamp at) {
    return outbox::detail::lifecycle::released(e, at, "offline");
  }

  // ---- the entity half ------------------------------------------------------------------------

  /// A new row and the event creating it, as a Repository commits them for an entity not stored
  /// yet: expected_version 0, op append; the event names the row (entity_type, entity_id), is
  /// ordered by "collection/id", and is the row's `last_event`. Times are `t0`.
  [[nodiscard]] entity_change make_entity_change(std::string collection, std::string id, std::string user,
                                                 std::string natural_key = {}) {
    entity_change c;
    c.event = make(user, collection + "/" + id, priority::normal, collection + ".created");
    c.event.entity_type = collection;
    c.event.entity_id = id;
    c.entity.collection = std::move(collection);
    c.entity.id = std::move(id);
    c.entity.user_id = std::move(user);
    c.entity.natural_key = std::move(natural_key);
    c.entity.payload = next_entity_payload();
    c.entity.occurred_at = t0;
    c.entity.created_at = t0;
    c.entity.updated_at = t0;
    c.entity.last_event = c.event.id;
    return c;
  }

  /// The next change of a stored row, read as `row`: expects its version, carries a new payload
  /// and appends an ".updated" event that becomes the row's `last_event`.
  [[nodiscard]] entity_change make_update(const entity_record& row) {
    entity_change c;
    c.entity = row;
    c.expected_version = row.version;
    c.entity.payload = next_entity_payload();
    c.event = make(row.user_id, row.collection + "/" + row.id, priority::normal, row.collection + ".updated");
    c.event.entity_type = row.collection;
    c.event.entity_id = row.id;
    c.entity.last_event = c.event.id;
    return c;
  }

  /// The next change of `row` carried by its unsent event `target` instead of a new one (op
  /// replace): what a Repository commits for an edit while the previous one is still unsent.
  [[nodiscard]] entity_change make_replace(const entity_record& row, event_id target) {
    entity_change c;
    c.entity = row;
    c.expected_version = row.version;
    c.entity.payload = next_entity_payload();
    c.entity.last_event = target;
    c.op = entity_change::event_op::replace;
    c.target = target;
    c.event.type = row.collection + ".updated";
    c.event.payload = c.entity.payload;
    c.event.updated_at = t0;
    return c;
  }

  /// Deletes `row` together with its unsent event `target` (erase, op drop): what a Repository
  /// commits when an entity the backend never heard of is removed.
  [[nodiscard]] static entity_change make_drop(const entity_record& row, event_id target) {
    entity_change c;
    c.entity = row;
    c.expected_version = row.version;
    c.erase = true;
    c.entity.last_event = {};
    c.op = entity_change::event_op::drop;
    c.target = target;
    return c;
  }

 private:
  std::string next_entity_payload() { return R"({"entity":)" + std::to_string(++made_) + "}"; }

  int made_ = 0;
};

/// Appends copies of `events` and, if that succeeds, copies the seqs (and leases) the storage
/// gave them back: a storage may move from what it appends, and a test compares the stored
/// events with the ones it made.
template <class Storage>
result<void> append_keeping(Storage& s, std::vector<event>& events) {
  std::vector<event> copies = events;
  auto appended = s.append(std::span<event>(copies));
  if (appended)
    for (std::size_t i = 0; i < events.size(); ++i) {
      events[i].seq = copies[i].seq;
      events[i].lease = copies[i].lease;
    }
  return appended;
}

namespace conformance {

// The chapters write times as t0 + 30s, t0 + 1h.
using namespace std::chrono_literals;

template <class Storage>
void append_all(Storage& s, std::vector<event>& events) {
  auto appended = append_keeping(s, events);
  REQUIRE(appended.has_value());
}

template <class Storage>
std::vector<event> claim(Storage& s, const claim_request& r) {
  std::vector<event> out;
  auto claimed = s.claim(r, out);
  REQUIRE(claimed.has_value());
  REQUIRE(*claimed == out.size());
  return out;
}

template <class Storage>
std::size_t record(Storage& s, std::vector<outcome> outcomes) {
  auto recorded = s.record(std::span<outcome>(outcomes));
  REQUIRE(recorded.has_value());
  return *recorded;
}

template <class Storage>
event fetch(Storage& s, event_id id) {
  auto found = s.find(id);
  REQUIRE(found.has_value());
  REQUIRE(found->has_value());
  return **found;
}

/// Checks `stats` against the events themselves, read one by one from `query`: for each of
/// `users`, and for all of them. A storage that keeps counts rather than counting must keep them
/// through every kind of write.
template <class Storage>
void check_stats(Storage& s, std::initializer_list<std::string_view> users, timestamp now) {
  event_query q;
  q.limit = 1'000'000;
  auto events = s.query(q);  // in append order
  REQUIRE(events.has_value());
  auto expect = [&](std::optional<std::string_view> user) {
    using line = std::pair<std::string_view, std::string_view>;  // (user, ordering key)
    std::vector<line> done;  // lines in flight, or whose head is known
    for (const auto& e : *events)
      if (e.status == status::processing) done.emplace_back(e.user_id, e.ordering_key);
    event_stats x;
    for (const auto& e : *events) {
      if (user && e.user_id != *user) continue;
      ++x.counts[static_cast<std::size_t>(e.status)];
      if (e.status == status::pending && !x.oldest_pending_age) x.oldest_pending_age = now - e.created_at;
      if (e.status == status::failed && !x.oldest_failed_age) x.oldest_failed_age = now - e.created_at;
      if (e.status == status::dead && !x.oldest_dead_age) x.oldest_dead_age = now - e.created_at;
      const bool undelivered = e.status == status::pending || e.status == status::failed;
      const line l{e.user_id, e.ordering_key};
      if (!undelivered || std::find(done.begin(), done.end(), l) != done.end()) continue;
      done.push_back(l);  // `e` heads its line, none of which is in flight: claimable if ready or due
      const bool claimable = e.status == status::pending || e.retry_after <= now;
      if (claimable && !x.oldest_due_age) x.oldest_due_age = now - e.created_at;
    }
    return x;
  };
  auto check = [&](std::optional<std::string_view> user) {
    INFO("user " << (user ? std::string(*user) : std::string("(all)")));
    auto stats = s.stats(user, now);
    REQUIRE(stats.has_value());
    const event_stats expected = expect(user);
    CHECK(stats->counts == expected.counts);
    CHECK(stats->oldest_pending_age == expected.oldest_pending_age);
    CHECK(stats->oldest_due_age == expected.oldest_due_age);
    CHECK(stats->oldest_failed_age == expected.oldest_failed_age);
    CHECK(stats->oldest_dead_age == expected.oldest_dead_age);
  };
  for (auto user : users) check(user);
  check(std::nullopt);
}

/// Checks the queries by `entity_id` and by `type`, alone and with each status, against the
/// events themselves, read from an unfiltered `query`.
template <class Storage>
void check_field_queries(Storage& s, const std::string& entity_id, const std::string& type) {
  event_query all;
  all.limit = 1'000'000;
  auto events = s.query(all);
  REQUIRE(events.has_value());
  auto seqs = [](const std::vector<event>& page) {
    std::vector<std::uint64_t> out;
    for (const auto& e : page) out.push_back(e.seq);
    return out;
  };
  auto check = [&](event_query q) {
    INFO("entity " << q.entity_id.value_or("(any)") << ", type " << q.type.value_or("(any)") << ", status "
                   << (q.status_is ? to_string(*q.status_is) : std::string_view("(any)")));
    std::vector<event> expected;
    for (const auto& e : *events)
      if (q.matches(e)) expected.push_back(e);
    auto found = s.query(q);
    REQUIRE(found.has_value());
    CHECK(seqs(*found) == seqs(expected));
  };
  for (int st = -1; st < static_cast<int>(status_count); ++st) {
    event_query q;
    q.limit = 1'000'000;
    if (st >= 0) q.status_is = static_cast<status>(st);
    q.entity_id = entity_id;
    check(q);
    q.entity_id.reset();
    q.type = type;
    check(q);
  }
}

inline std::vector<std::string> keys_of(const std::vector<event>& events) {
  std::vector<std::string> keys;
  for (const auto& e : events) keys.push_back(e.ordering_key);
  return keys;
}

/// A string literal with its embedded NUL bytes kept.
template <std::size_t N>
std::string bytes(const char (&text)[N]) {
  return std::string(text, N - 1);
}

/// Printable text for any bytes, so a failed comparison shows where two values differ.
inline std::string escaped(std::string_view text) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f && c != '\\') {
      out += c;
    } else {
      out += "\\x";
      out += digits[byte >> 4];
      out += digits[byte & 0xF];
    }
  }
  return out;
}

inline std::string micros(timestamp t) { return std::to_string(to_micros(t)); }

/// Every field of a row, at the microsecond precision storages keep times in.
inline std::string text_of(const entity_record& r) {
  return r.collection + "/" + r.id + " user=" + r.user_id + " key=" + escaped(r.natural_key) +
         " payload=" + escaped(r.payload) + " occurred=" + micros(r.occurred_at) + " sync=" +
         std::string(to_string(r.sync)) + " remote=" + escaped(r.remote_id) + " error=" + escaped(r.sync_error) +
         " last=" + r.last_event.to_string() + " version=" + std::to_string(r.version) +
         " created=" + micros(r.created_at) + " updated=" + micros(r.updated_at);
}

/// Every field of an event but the lease token.
inline std::string text_of(const event& e) {
  return e.id.to_string() + " seq=" + std::to_string(e.seq) + " type=" + e.type + " entity=" + e.entity_type +
         "/" + e.entity_id + " key=" + e.ordering_key + " user=" + e.user_id + " payload=" + escaped(e.payload) +
         " priority=" + std::to_string(e.priority) + " status=" + std::string(to_string(e.status)) +
         " attempts=" + std::to_string(e.attempts) + "/" + std::to_string(e.max_attempts) +
         " created=" + micros(e.created_at) + " updated=" + micros(e.updated_at) +
         " retry=" + micros(e.retry_after) + " completed=" + micros(e.completed_at) +
         " error=" + escaped(e.last_error) + " remote=" + escaped(e.remote_id);
}

template <class Storage>
void commit_ok(Storage& s, const entity_change& c) {
  auto committed = s.commit(c);
  if (!committed) FAIL("commit of " << c.entity.collection << "/" << c.entity.id << " failed: " << committed.error().what());
}

/// What a commit answered: "ok", "conflict", "invalid_argument", or another error's text.
template <class Storage>
std::string commit_answer(Storage& s, const entity_change& c) {
  auto committed = s.commit(c);
  if (committed) return "ok";
  if (committed.error() == errc::conflict) return "conflict";
  if (committed.error() == errc::invalid_argument) return "invalid_argument";
  return committed.error().what();
}

template <class Storage>
std::optional<entity_record> find_row(Storage& s, std::string_view collection, std::string_view id) {
  auto found = s.find_entity(collection, id);
  REQUIRE(found.has_value());
  return *found;
}

template <class Storage>
entity_record row_of(Storage& s, std::string_view collection, std::string_view id) {
  auto found = find_row(s, collection, id);
  REQUIRE(found.has_value());
  return *found;
}

template <class Storage>
bool has_row(Storage& s, std::string_view collection, std::string_view id) {
  return find_row(s, collection, id).has_value();
}

template <class Storage>
bool has_event(Storage& s, event_id id) {
  auto found = s.find(id);
  REQUIRE(found.has_value());
  return found->has_value();
}

/// The id of the row holding a natural key, or "" if none does.
template <class Storage>
std::string key_owner(Storage& s, std::string_view collection, std::string_view user, std::string_view key) {
  auto found = s.find_entity_by_key(collection, user, key);
  REQUIRE(found.has_value());
  if (!found->has_value()) return {};
  const entity_record& row = **found;
  CHECK(row.collection == collection);
  CHECK(row.user_id == user);
  CHECK(row.natural_key == key);
  return row.id;
}

template <class Storage>
std::vector<event> all_events(Storage& s) {
  event_query q;
  q.limit = 100'000;
  auto events = s.query(q);
  REQUIRE(events.has_value());
  return *events;
}

template <class Storage>
std::size_t event_count(Storage& s, timestamp now) {
  auto stats = s.stats(std::nullopt, now);
  REQUIRE(stats.has_value());
  return stats->total();
}

/// The given rows and every event, as text: equal snapshots mean nothing changed.
template <class Storage>
std::string snapshot(Storage& s, std::initializer_list<std::pair<std::string_view, std::string_view>> rows) {
  std::string text;
  for (const auto& [collection, id] : rows) {
    auto row = find_row(s, collection, id);
    text += row ? text_of(*row) : std::string(collection) + "/" + std::string(id) + " absent";
    text += '\n';
  }
  for (const event& e : all_events(s)) text += text_of(e) + '\n';
  return text;
}

/// The ids query_entities lists, in its order.
template <class Storage>
std::vector<std::string> listed(Storage& s, const entity_query& q) {
  auto rows = s.query_entities(q);
  REQUIRE(rows.has_value());
  std::vector<std::string> ids;
  for (const auto& row : *rows) ids.push_back(row.id);
  return ids;
}

/// The ids of rows, as `listed` returns them.
using id_list = std::vector<std::string>;

}  // namespace conformance
}  // namespace outbox::testing
