// outbox::sqlite_storage under SIGKILL: a child process saves and delivers under load and is
// killed at random moments, at least 50 times; after each kill the parent reopens the database
// and checks that every event whose save had returned is there, that nothing completed was lost,
// and that the only duplicates are events that were in flight at a kill (see harness.hpp).
// Real processes, real kills: fork, then kill(pid, SIGKILL).
#include <catch2/catch.hpp>

#include <outbox/storage/sqlite.hpp>

#include <chrono>
#include <cstdio>

#include "crash/harness.hpp"
#include "support/temp_sqlite.hpp"

TEST_CASE("sqlite_storage: SIGKILL at random moments loses nothing acknowledged or completed",
          "[crash][sqlite]") {
  const outbox_test::temp_file_owner database(outbox_test::temp_path("outbox-crash.db"));
  // The shipped defaults: synchronous = full, group commit on.
  const auto open = [path = database.path.string()] { return outbox::sqlite_storage::open(path); };

  outbox_crash::config config = outbox_crash::config_from_environment();
  REQUIRE(config.kills >= 1);
  // Printed first, so a failing or hanging run's kill schedule and workload can be replayed with
  // OUTBOX_CRASH_SEED=<seed> (thread timing still varies from run to run).
  std::printf("sqlite crash test: seed %llu, %d kills\n", static_cast<unsigned long long>(config.seed), config.kills);
  std::fflush(stdout);

  const auto started = std::chrono::steady_clock::now();
  const outbox_crash::summary s = outbox_crash::run(open, config);
  const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  std::printf("sqlite crash test: %d kills in %.1f s; %zu acknowledged writes of %zu events (%zu more stored "
              "unacknowledged), %zu entities; %zu deliveries accepted, %zu refused, %zu reported done; "
              "%zu events in flight at %d of the kills, %zu completed but killed before on_delivered; "
              "%zu duplicate deliveries\n",
              s.kills, seconds, s.acks, s.acked_events, s.unacked_events, s.entities, s.accepted, s.refused, s.done,
              s.in_flight_at_kills, s.kills_with_delivery_in_flight, s.completed_without_callback, s.duplicates);
  INFO("seed " << config.seed << " (replay with OUTBOX_CRASH_SEED=" << config.seed << ")");
  // The first few say what broke; the rest usually repeat it.
  for (std::size_t i = 0; i < s.violations.size() && i < 25; ++i) FAIL_CHECK(s.violations[i]);
  INFO(s.violations.size() << " violations in all");
  REQUIRE(s.violations.empty());
  CHECK(s.kills == config.kills);
  if (config.kills >= 50) {
    // The run must have exercised what it claims to: writes acknowledged, all of them delivered
    // in the end, and kills that landed while deliveries were in flight.
    CHECK(s.acked_events > 0);
    CHECK(s.events >= s.acked_events);
    CHECK(s.kills_with_delivery_in_flight > 0);
  }
}
