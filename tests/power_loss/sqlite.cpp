// Power cuts under the SQLite storage: a VFS over the default one records what SQLite wrote
// and synced (testing/power_loss_sqlite.hpp); each cut's state is reopened and compared.

#include <catch2/catch.hpp>

#include <outbox/storage/sqlite.hpp>
#include <outbox/testing/power_loss_sqlite.hpp>

#include <filesystem>
#include <string>

#include "support/power_loss.hpp"
#include "support/temp_file_storage.hpp"  // temp_dir_owner, temp_path

namespace {

namespace pl = outbox::testing::power_loss;

pl::check_report run(const std::filesystem::path& work, outbox::sqlite_options options, pl::check_options check = {},
                     std::function<void(pl::recorder&)> before = {}) {
  REQUIRE(pl::sqlite_vfs::name() != nullptr);
  options.vfs = pl::sqlite_vfs::name();
  auto report = pl::check(
      work,
      [&](const std::filesystem::path& dir, pl::recorder& rec) {
        pl::sqlite_vfs::record_into(&rec);
        return outbox::sqlite_storage::open((dir / "outbox.db").string(), options);
      },
      [&](const std::filesystem::path& dir) {
        pl::sqlite_vfs::record_into(nullptr);
        return outbox::sqlite_storage::open((dir / "outbox.db").string(), options);
      },
      [](outbox::sqlite_storage& storage) -> outbox::result<void> {  // the maintenance: a checkpoint
        const int rc = sqlite3_wal_checkpoint_v2(storage.handle(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
        if (rc != SQLITE_OK) return outbox::error(outbox::errc::io_error, sqlite3_errstr(rc));
        return {};
      },
      check, std::move(before));
  pl::sqlite_vfs::record_into(nullptr);
  return report;
}


outbox::sqlite_options mode(outbox::sqlite_options::sync_mode sync, bool gather = true) {
  outbox::sqlite_options o;
  o.synchronous = sync;
  o.gather_wal_writes = gather;
  return o;
}

}  // namespace

TEST_CASE("power loss, SQLite storage: synchronous full loses nothing acknowledged", "[power_loss][sqlite]") {
  outbox_test::temp_dir_owner dir(outbox_test::temp_path("power-sqlite"));
  SECTION("WAL writes gathered (the default)") { outbox_test::require_clean(run(dir.path, mode(outbox::sqlite_options::sync_mode::full))); }
  SECTION("WAL writes as SQLite makes them") {
    pl::check_options c;
    c.seed = 2;
    outbox_test::require_clean(run(dir.path, mode(outbox::sqlite_options::sync_mode::full, false), c));
  }
}

TEST_CASE("power loss, SQLite storage: synchronous normal keeps a consistent earlier state", "[power_loss][sqlite]") {
  // The README's promise for normal: a power cut may lose the commits since the last checkpoint's
  // sync, never the database: each state reopens as one the calls passed through, no older than
  // that sync.
  outbox_test::temp_dir_owner dir(outbox_test::temp_path("power-sqlite-normal"));
  pl::check_options c;
  c.seed = 3;
  c.acknowledged_is_durable = false;
  outbox_test::require_clean(run(dir.path, mode(outbox::sqlite_options::sync_mode::normal), c));
  SECTION("and it does lose acknowledged commits, as documented") {
    pl::check_options strict = c;
    strict.acknowledged_is_durable = true;
    auto r = run(dir.path, mode(outbox::sqlite_options::sync_mode::normal), strict);
    CHECK(r.lost_acknowledged > 0);
  }
}

TEST_CASE("power loss, SQLite storage: the check finds a missing sync", "[power_loss][sqlite]") {
  outbox_test::temp_dir_owner dir(outbox_test::temp_path("power-sqlite-fault"));
  pl::check_options c;
  c.operations = 30;
  c.cuts = 20;
  // Skip the syncs of the open (its schema) and leave out the sync of a later commit.
  auto r = run(dir.path, mode(outbox::sqlite_options::sync_mode::full), c, [](pl::recorder& rec) { rec.drop_file_sync(12); });
  CHECK_FALSE(r.ok());
  CHECK(r.lost_acknowledged > 0);
}

TEST_CASE("sqlite_options::vfs opens the database over a registered VFS, and refuses an unknown name", "[power_loss][sqlite]") {
  outbox_test::temp_dir_owner dir(outbox_test::temp_path("power-sqlite-vfs"));
  std::filesystem::create_directories(dir.path);
  pl::recorder rec(dir.path);
  pl::sqlite_vfs::record_into(&rec);
  outbox::sqlite_options o;
  o.vfs = pl::sqlite_vfs::name();
  {
    auto s = outbox::sqlite_storage::open((dir.path / "outbox.db").string(), o);
    REQUIRE(s.has_value());
  }
  pl::sqlite_vfs::record_into(nullptr);
  CHECK(rec.size() > 0);  // the VFS saw the schema's writes
  o.vfs = "no-such-vfs";
  auto refused = outbox::sqlite_storage::open((dir.path / "other.db").string(), o);
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().code == outbox::errc::invalid_argument);
  CHECK_THAT(refused.error().message, Catch::Contains("no-such-vfs"));
}
