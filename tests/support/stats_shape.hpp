// The shape of stats() every storage shares with the outbox: stats() and stats(user) age events
// against the wall clock; stats(user, now) against a given time (the outbox's clock).
#pragma once

#include <catch2/catch.hpp>

#include <outbox/outbox.hpp>
#include <outbox/testing/storage_conformance.hpp>

#include <chrono>
#include <optional>
#include <string_view>
#include <vector>

namespace outbox_test {

template <class Storage>
void check_stats_shape(Storage& s) {
  using namespace std::chrono_literals;
  outbox::testing::storage_fixture f;
  std::vector<outbox::event> batch = {f.make("alice", "k1"), f.make("bob", "k2")};
  // Whole seconds: a storage may keep time at a coarser grain than the clock (SQLite: microseconds).
  const outbox::timestamp hour_ago =
      outbox::timestamp(std::chrono::floor<std::chrono::seconds>(outbox::system_clock{}.now())) - 1h;
  for (auto& e : batch) e.created_at = e.updated_at = hour_ago;
  REQUIRE(outbox::testing::append_keeping(s, batch).has_value());

  const outbox::event_stats all = s.stats().value();
  CHECK(all.count(outbox::status::pending) == 2);
  REQUIRE(all.oldest_pending_age.has_value());
  CHECK(*all.oldest_pending_age >= 1h);
  CHECK(*all.oldest_pending_age < 1h + 10min);

  const outbox::event_stats alice = s.stats("alice").value();
  CHECK(alice.count(outbox::status::pending) == 1);
  CHECK(s.stats(std::string_view("bob")).value().total() == 1);

  // The explicit form is the one the outbox calls, with its own clock.
  const outbox::event_stats at = s.stats(std::nullopt, hour_ago + 2h).value();
  REQUIRE(at.oldest_pending_age.has_value());
  CHECK(*at.oldest_pending_age == 2h);
}

}  // namespace outbox_test
