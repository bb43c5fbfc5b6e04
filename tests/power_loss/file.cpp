// Power cuts under the file storage: the simulator (testing/power_loss.hpp) replays what the
// storage wrote and synced, keeps what a file system may keep after the power goes, and reopens.

#include <catch2/catch.hpp>

#include <outbox/storage/file.hpp>
#include <outbox/testing/power_loss.hpp>

#include <filesystem>
#include <string>
#include <unistd.h>

#include "support/power_loss.hpp"
#include "support/temp_file_storage.hpp"  // temp_dir_owner, temp_path

namespace {

namespace pl = outbox::testing::power_loss;
using recording_file_storage = outbox::basic_file_storage<pl::recording_io>;

// Small segments and preallocation, and compaction from little garbage on: the workload rolls
// segments, compacts on its own and preallocates, so the cuts fall in each of those steps.
outbox::file_options small(outbox::file_options::sync_policy sync) {
  outbox::file_options o;
  o.sync = sync;
  o.segment_bytes = 16 << 10;
  o.preallocate_bytes = 8 << 10;
  o.compact_min_dead_bytes = 8 << 10;
  return o;
}

pl::check_report run(const std::filesystem::path& work, outbox::file_options options, pl::check_options check = {},
                     std::function<void(pl::recorder&)> before = {}) {
  return pl::check(
      work,
      [&](const std::filesystem::path& dir, pl::recorder& rec) {
        return recording_file_storage::open(dir, options, pl::recording_io{&rec});
      },
      [&](const std::filesystem::path& dir) { return outbox::basic_file_storage<pl::unsynced_io>::open(dir, options); },
      [](auto& storage) { return storage.compact(); }, check, std::move(before));
}


}  // namespace

TEST_CASE("power loss, file storage: nothing acknowledged is lost under the durable sync policies", "[power_loss][file]") {
  outbox_test::temp_dir_owner dir(outbox_test::temp_path("power-file"));
  SECTION("sync group") { outbox_test::require_clean(run(dir.path, small(outbox::file_options::sync_policy::group))); }
  SECTION("sync every_commit") {
    pl::check_options c;
    c.seed = 2;
    outbox_test::require_clean(run(dir.path, small(outbox::file_options::sync_policy::every_commit), c));
  }
  SECTION("sync group, default segment and preallocation sizes") {
    // Opening reads each 1 MiB of preallocated zeros: fewer calls keep the run short.
    outbox::file_options o;
    pl::check_options c;
    c.operations = 30;
    c.seed = 3;
    outbox_test::require_clean(run(dir.path, o, c));
  }
}

TEST_CASE("power loss, file storage: the check finds a missing sync", "[power_loss][file]") {
  outbox_test::temp_dir_owner dir(outbox_test::temp_path("power-file-fault"));
  pl::check_options c;
  c.operations = 40;
  c.cuts = 20;
  SECTION("the fdatasync of the first save is left out") {
    // The open syncs its first segment (file sync 0); the first call, a save, makes file sync 1.
    auto r = run(dir.path, small(outbox::file_options::sync_policy::group), c, [](pl::recorder& rec) { rec.drop_file_sync(1); });
    CHECK_FALSE(r.ok());
    CHECK(r.lost_acknowledged > 0);
    REQUIRE_FALSE(r.problems.empty());
    CHECK_THAT(r.problems.front(), Catch::Contains("lost acknowledged event"));
  }
  SECTION("the directory sync after the first segment's rename is left out") {
    auto r = run(dir.path, small(outbox::file_options::sync_policy::group), c, [](pl::recorder& rec) { rec.drop_directory_sync(0); });
    CHECK_FALSE(r.ok());
    CHECK(r.lost_acknowledged > 0);
  }
  SECTION("sync none: acknowledged events are lost at a power cut, as documented") {
    auto r = run(dir.path, small(outbox::file_options::sync_policy::none), c);
    CHECK(r.lost_acknowledged > 0);
  }
}
