// Power cuts under the file storage: the simulator (testing/power_loss.hpp) replays what the
// storage wrote and synced, keeps what a file system may keep after the power goes, and reopens.

#include <catch2/catch.hpp>

#include <outbox/storage/file.hpp>
#include <outbox/testing/power_loss.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
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

TEST_CASE("file storage: a last write whose earlier sector was lost and later ones kept is a torn tail", "[power_loss][file]") {
  // What a power cut leaves when the kernel wrote back the end of the last write but not its
  // start: a readable record after an unreadable one, at the end of the last segment. Nothing
  // of that write was acknowledged, so opening cuts it off. The same bytes damaged otherwise
  // than by a sector of zeros stay corruption.
  outbox_test::temp_dir_owner dir(outbox_test::temp_path("power-file-torn"));
  auto segment = [&] { return dir.path / outbox::detail::file::segment_name(1); };
  std::vector<std::string> saved;
  {
    auto s = outbox::file_storage::open(dir.path).value();
    for (int i = 0; i < 3; ++i) {
      auto c = outbox::testing::power_loss::detail_check::save(
          outbox::entity_record{"steps", "e" + std::to_string(i)}, outbox::event_id_generator{7}.next(outbox::timestamp(std::chrono::seconds(1767225600 + i))),
          outbox::timestamp(std::chrono::seconds(1767225600)), "{}");
      REQUIRE(s.commit(c).has_value());
      saved.push_back(c.event.id.to_string());
    }
  }  // closing cuts the preallocated zeros: the segment ends with its log
  std::string bytes;
  {
    std::ifstream in(segment(), std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const std::size_t log_end = bytes.size();
  // The write in flight: a large event, a small one and the commit, never synced.
  outbox::event big, small_one;
  big.id = outbox::event_id_generator{8}.next(outbox::timestamp(std::chrono::seconds(1800000000)));
  big.seq = 4;
  big.type = big.entity_id = big.ordering_key = big.user_id = "x";
  big.payload = std::string(2000, 'p');
  small_one = big;
  small_one.id = outbox::event_id_generator{9}.next(outbox::timestamp(std::chrono::seconds(1800000000)));
  small_one.seq = 5;
  small_one.payload = "{}";
  std::string write;
  outbox::detail::log::put_event(write, big);
  outbox::detail::log::put_event(write, small_one);
  outbox::detail::log::put_marker(write, outbox::detail::log::record_type::commit, 6);
  auto torn = [&](char lost) {
    std::string content = bytes + write;
    // The write's first sector, from where it starts to the sector's end, and the whole next
    // sector: all inside the big record, so the small one and the commit stay readable.
    const std::size_t end = (log_end / 512 + 2) * 512;
    REQUIRE(end < log_end + 2000);
    for (std::size_t i = log_end; i < end; ++i) content[i] = lost;
    std::ofstream out(segment(), std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
  };

  SECTION("lost sectors read as zeros: a torn tail, cut off") {
    torn('\0');
    auto s = outbox::file_storage::open(dir.path);
    REQUIRE(s.has_value());
    CHECK(s->recovery().torn_bytes_truncated > 0);
    for (const auto& id : saved) CHECK(s->find(*outbox::event_id::parse(id)).value().has_value());
    CHECK_FALSE(s->find(small_one.id).value().has_value());
    CHECK(std::filesystem::file_size(segment()) == log_end);
  }
  SECTION("other damage before a readable record: corruption, as before") {
    torn('\x5a');
    auto s = outbox::file_storage::open(dir.path);
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().code == outbox::errc::corrupt_data);
  }
}
