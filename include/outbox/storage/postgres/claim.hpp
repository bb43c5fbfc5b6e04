#pragma once
/// \file
/// Claims: leases that ended are expired, then the batch is claimed, both in one round trip
/// (one implicit transaction: the pipeline ends with one sync).

#include <algorithm>
#include <cstddef>
#include <vector>

#include "outbox/detail/lifecycle.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage.hpp"
#include "outbox/storage/postgres/link.hpp"

namespace outbox::detail::postgres {

/// Lease expiry (the rule: lifecycle::lease_expiry, its SQL: statements.hpp `expire`), bound to
/// the rule's own messages.
[[nodiscard]] inline query expire_query(link& l, timestamp now) {
  const int last = 1;  // lease_expiry(attempts, max): dead when attempts >= max
  return {l.sql.expire,
          {text_of(now), std::string(lifecycle::lease_expiry(last, last).message),
           std::string(lifecycle::lease_expiry(0, last).message)}};
}

/// Expires ended leases and claims up to `request.limit` events, appending them to `out` in
/// claim order (lifecycle::claim_rank: the statement's RETURNING has no order of its own).
[[nodiscard]] inline result<std::size_t> claim_events(link& l, const claim_request& request, std::vector<event>& out) {
  if (request.limit == 0) return std::size_t{0};
  const query queries[] = {
      expire_query(l, request.now),
      {l.sql.claim,
       {std::string(request.user_id), text_of(request.now), text_of(request.lease_until),
        text_of(static_cast<std::int64_t>(request.limit)), text_of(l.relay_id)}}};
  auto r = l.run(queries, "claiming events");
  if (!r) return r.error();
  const result_handle& rows = (*r)[1];
  const std::size_t first = out.size();
  for (int row = 0; row < rows.rows(); ++row) out.push_back(read_event(rows, row));
  std::sort(out.begin() + static_cast<std::ptrdiff_t>(first), out.end(),
            [](const event& a, const event& b) { return lifecycle::claim_rank(a) < lifecycle::claim_rank(b); });
  return out.size() - first;
}

}  // namespace outbox::detail::postgres
