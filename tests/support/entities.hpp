#pragma once
// Entities of the reference app, as a user would write them: plain structs with an id, a user
// id, a collection name and a serialiser; nothing else is required.

#include <outbox/outbox.hpp>
#include <outbox/testing/faulty_storage.hpp>

#include <charconv>
#include <string>
#include <string_view>
#include <vector>

#include "support/fixture.hpp"
#if OUTBOX_TEST_WITH_SQLITE
#include "support/temp_file_storage.hpp"
#include "support/temp_sqlite.hpp"
#endif

namespace outbox_test {

inline std::vector<std::string> split(std::string_view text, char sep) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == sep) {
      parts.emplace_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  return parts;
}

inline int to_int(std::string_view text) {
  int value = 0;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

/// Hourly steps: one entity per user, date and hour (the natural key).
struct hourly_steps {
  static constexpr std::string_view collection = "steps";
  std::string id;
  std::string user_id;
  std::string date;  // "2026-11-21"
  int hour = 0;
  int count = 0;
  outbox::timestamp occurred_at{};

  [[nodiscard]] std::string natural_key() const { return date + "T" + std::to_string(hour); }
  [[nodiscard]] std::string to_payload() const {
    return user_id + "|" + date + "|" + std::to_string(hour) + "|" + std::to_string(count) + "|" +
           std::to_string(outbox::to_micros(occurred_at));
  }
  static hourly_steps from_payload(std::string_view payload) {
    const auto p = split(payload, '|');
    hourly_steps s;
    s.user_id = p.at(0);
    s.date = p.at(1);
    s.hour = to_int(p.at(2));
    s.count = to_int(p.at(3));
    s.occurred_at = outbox::from_micros(std::stoll(p.at(4)));
    return s;
  }
};

/// A weight entry with no natural key: every save with a new id is a new entry.
struct weight_entry {
  static constexpr std::string_view collection = "weight";
  std::string id;
  std::string user_id;
  double kg = 0;

  [[nodiscard]] std::string to_payload() const { return user_id + "|" + std::to_string(kg); }
  static weight_entry from_payload(std::string_view payload) {
    const auto p = split(payload, '|');
    return {{}, p.at(0), std::stod(p.at(1))};
  }
};

/// Every storage that implements the entity half; the repository tests run over each.
#if OUTBOX_TEST_WITH_SQLITE
#define OUTBOX_TEST_ENTITY_STORAGES \
  outbox::memory_storage, outbox::testing::faulty_storage<outbox::memory_storage>, outbox_test::temp_sqlite_storage, \
      outbox_test::temp_file_storage
#else
#define OUTBOX_TEST_ENTITY_STORAGES outbox::memory_storage, outbox::testing::faulty_storage<outbox::memory_storage>
#endif

/// An outbox over `Storage` and repositories sharing it.
template <class Storage>
struct repo_fixture : basic_fixture<Storage> {
  using basic_fixture<Storage>::basic_fixture;
  outbox::Repository<hourly_steps, Storage, outbox::coalesce_unsent, outbox::manual_clock> steps{this->box};
  outbox::Repository<weight_entry, Storage, outbox::coalesce_unsent, outbox::manual_clock> weights{this->box};

  hourly_steps hour(int h, int count, std::string user = "alice") {
    return {.id = "", .user_id = std::move(user), .date = "2026-11-21", .hour = h, .count = count,
            .occurred_at = this->t0 + std::chrono::hours(h)};
  }
  std::vector<outbox::event> events(std::optional<outbox::status> s = std::nullopt) {
    return this->box.query({.status_is = s, .user_id = std::nullopt, .limit = 10'000, .after_seq = 0}).value();
  }
};

}  // namespace outbox_test
