// outbox::detail::lifecycle: the life-cycle rules every storage and the outbox call.

#include <catch2/catch.hpp>

#include <chrono>
#include <vector>

#include <outbox/detail/lifecycle.hpp>
#include <outbox/event_id.hpp>

namespace lc = outbox::detail::lifecycle;
using outbox::status;
using namespace std::chrono_literals;

namespace {
outbox::event claimed(int attempts, int max_attempts) {
  outbox::event e;
  e.id = outbox::event_id_generator(7).next(outbox::timestamp(1s));
  e.status = status::processing;
  e.lease = 99;
  e.attempts = attempts;
  e.max_attempts = max_attempts;
  return e;
}
}  // namespace

TEST_CASE("lifecycle: a failure is retried until the last attempt, then dead", "[detail][lifecycle]") {
  const outbox::timestamp at(10s), later(20s);
  const auto early = lc::failed(claimed(1, 3), at, "500", false, later);
  CHECK(early.to == status::failed);
  CHECK(early.retry_after == later);
  CHECK(early.lease == 99);
  CHECK(lc::failed(claimed(3, 3), at, "500", false, later).to == status::dead);
  CHECK(lc::failed(claimed(1, 3), at, "400", true, later).to == status::dead);
  CHECK(lc::released(claimed(2, 3), at, "offline").attempts == 1);  // the unsent attempt is given back
  CHECK(lc::delivered(claimed(1, 3), at, "r-1").remote_id == "r-1");
}

TEST_CASE("lifecycle: an expired lease returns the event to pending, or dead on its last attempt",
          "[detail][lifecycle]") {
  CHECK(lc::lease_expiry(claimed(1, 3)).to == status::pending);
  CHECK(std::string(lc::lease_expiry(claimed(1, 3)).message) == "lease expired");
  const auto last = lc::lease_expiry(claimed(3, 3));
  CHECK(last.to == status::dead);
  CHECK(std::string(last.message) == "lease expired during the last attempt");
}

TEST_CASE("lifecycle: an outcome applies only under the lease it names", "[detail][lifecycle]") {
  const auto o = lc::delivered(claimed(1, 3), outbox::timestamp(10s), "r");
  CHECK(lc::may_record(status::processing, 99, o));
  CHECK_FALSE(lc::may_record(status::processing, 100, o));  // claimed again since
  CHECK_FALSE(lc::may_record(status::pending, 99, o));      // the lease expired
  std::vector<outbox::outcome> bad = {o};
  bad[0].to = status::processing;
  CHECK(lc::check_outcomes(bad).error().code == outbox::errc::invalid_argument);
}

TEST_CASE("lifecycle: new events are pending, with an id", "[detail][lifecycle]") {
  outbox::event e = claimed(0, 3);
  CHECK_FALSE(lc::acceptable_new(e));
  CHECK(lc::validate_new(e, false).error().message.find("must be pending") != std::string::npos);
  e.status = status::pending;
  CHECK(lc::acceptable_new(e));
  CHECK(lc::validate_new(e, false).has_value());
  CHECK(lc::validate_new(e, true).error().message.find("duplicate event id") != std::string::npos);
  e.id = {};
  CHECK(lc::validate_new(e, false).error().message.find("nil") != std::string::npos);
}

TEST_CASE("lifecycle: write-back syncs the entity only for its latest event", "[detail][lifecycle]") {
  outbox::event e = claimed(1, 3);
  e.entity_type = "order";
  e.status = status::completed;
  e.remote_id = "r-9";
  CHECK(lc::writes_back(e));
  outbox::entity_record row;
  row.last_event = e.id;
  lc::write_back(e, row);
  CHECK(row.sync == outbox::sync_status::synced);
  CHECK(row.remote_id == "r-9");
  CHECK(row.version == 1);
  outbox::entity_record newer;  // a newer change waits: stays pending, but learns the remote id
  lc::write_back(e, newer);
  CHECK(newer.sync == outbox::sync_status::pending);
  CHECK(newer.remote_id == "r-9");
  e.status = status::failed;
  CHECK_FALSE(lc::writes_back(e));
}
