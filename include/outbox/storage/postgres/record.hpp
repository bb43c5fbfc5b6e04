#pragma once
/// \file
/// Recording a batch's outcomes in one round trip: the keys locked in order, then one statement
/// applying each outcome only under its lease (fencing) and writing delivered and dead ones back
/// onto their entities.

#include <cstddef>
#include <span>
#include <unordered_set>

#include "outbox/detail/lifecycle.hpp"
#include "outbox/error.hpp"
#include "outbox/storage.hpp"
#include "outbox/storage/postgres/append.hpp"
#include "outbox/storage/postgres/link.hpp"

namespace outbox::detail::postgres {

[[nodiscard]] inline result<std::size_t> record_outcomes(link& l, std::span<outcome> outcomes) {
  if (auto valid = lifecycle::check_outcomes(outcomes); !valid) return valid.error();
  for (auto& o : outcomes) o.applied = false;
  if (outcomes.empty()) return std::size_t{0};
  array_literal ids, leases, statuses, attempts, ats, retries, errors, remote_ids;
  for (const outcome& o : outcomes) {
    ids.add(o.id);
    leases.add(static_cast<std::int64_t>(o.lease));
    statuses.add(std::int64_t{static_cast<int>(o.to)});
    attempts.add(std::int64_t{o.attempts});
    ats.add(o.at);
    retries.add(o.retry_after);
    errors.add(o.error);
    remote_ids.add(o.remote_id);
  }
  std::string id_list = std::move(ids).str();
  const query queries[] = {
      {l.sql.lock_recorded_keys, {id_list}},
      {l.sql.record,
       {std::move(id_list), std::move(leases).str(), std::move(statuses).str(), std::move(attempts).str(),
        std::move(ats).str(), std::move(retries).str(), std::move(errors).str(), std::move(remote_ids).str(),
        text_of(std::int64_t{completed_shard(l.relay_id)})}}};
  auto all = l.run(queries, "recording outcomes");  // one round trip, one implicit transaction
  if (!all) return all.error();
  const result_handle* r = &(*all)[1];
  std::unordered_set<event_id, event_id_hash> applied;
  for (int row = 0; row < r->rows(); ++row) applied.insert(r->id(row, 0));
  std::size_t count = 0;
  for (auto& o : outcomes) {
    o.applied = applied.count(o.id) > 0;
    count += o.applied ? 1 : 0;
  }
  return count;
}

}  // namespace outbox::detail::postgres
