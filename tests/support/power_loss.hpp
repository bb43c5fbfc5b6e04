#pragma once
// What every power-loss test asserts of a check's report.

#include <catch2/catch.hpp>

#include <outbox/testing/power_loss.hpp>

namespace outbox_test {

/// The check passed, over at least 100 random cuts; its problems are shown when it did not.
inline void require_clean(const outbox::testing::power_loss::check_report& r) {
  INFO("calls " << r.operations << ", trace " << r.trace_calls << ", cuts " << r.cuts << ", failed " << r.failed_cuts);
  for (const auto& p : r.problems) UNSCOPED_INFO(p);
  CHECK(r.ok());
  CHECK(r.random_cuts >= 100);
}

}  // namespace outbox_test
