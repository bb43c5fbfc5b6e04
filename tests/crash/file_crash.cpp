// outbox::file_storage under SIGKILL, compaction included: the same harness as the SQLite crash
// test (see harness.hpp), on a storage whose compaction thresholds are tiny, so that the child
// compacts every few dozen writes and many kills land during a compaction (writing the snapshot,
// renaming it, deleting the old segments). After each kill the parent reopens the directory and
// checks that every acknowledged event is there, nothing completed was lost, and the only
// duplicates are events that were in flight at a kill.
#include <catch2/catch.hpp>

#include <outbox/storage/file.hpp>

#include <chrono>
#include <cstdio>

#include "crash/harness.hpp"
#include "support/temp_file_storage.hpp"

TEST_CASE("file_storage: SIGKILL at random moments, during compaction too, loses nothing acknowledged",
          "[crash][file]") {
  const outbox_test::temp_dir_owner directory(outbox_test::temp_path("outbox-crash-dir"));
  outbox::file_options options;  // the default durable group commit
  options.compact_min_dead_bytes = 8 << 10;
  options.compact_dead_ratio = 0.5;
  options.segment_bytes = 64 << 10;
  const auto open = [path = directory.path, options] { return outbox::file_storage::open(path, options); };

  outbox_crash::config config = outbox_crash::config_from_environment();
  REQUIRE(config.kills >= 1);
  std::printf("file crash test: seed %llu, %d kills\n", static_cast<unsigned long long>(config.seed), config.kills);
  std::fflush(stdout);

  const auto started = std::chrono::steady_clock::now();
  const outbox_crash::summary s = outbox_crash::run(open, config);
  const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  // How much compaction the run did: the directory's segment numbers only grow, by one per
  // compaction or segment roll.
  std::uint64_t last_segment = 0;
  for (const auto& entry : std::filesystem::directory_iterator(directory.path)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("segment-", 0) == 0) last_segment = std::max<std::uint64_t>(last_segment, std::stoull(name.substr(8)));
  }
  std::printf("file crash test: %d kills in %.1f s; %zu acknowledged writes of %zu events, %zu entities; "
              "%zu duplicate deliveries; %llu segments written (compactions and rolls)\n",
              s.kills, seconds, s.acks, s.acked_events, s.entities, s.duplicates,
              static_cast<unsigned long long>(last_segment));
  INFO("seed " << config.seed << " (replay with OUTBOX_CRASH_SEED=" << config.seed << ")");
  for (std::size_t i = 0; i < s.violations.size() && i < 25; ++i) FAIL_CHECK(s.violations[i]);
  INFO(s.violations.size() << " violations in all");
  REQUIRE(s.violations.empty());
  CHECK(s.kills == config.kills);
  if (config.kills >= 50) {
    CHECK(s.acked_events > 0);
    CHECK(s.kills_with_delivery_in_flight > 0);
    CHECK(last_segment > static_cast<std::uint64_t>(config.kills) / 2);  // compactions throughout the run
  }
}
