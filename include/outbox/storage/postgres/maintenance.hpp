#pragma once
/// \file
/// The operator's writes on events: resetting failed and dead events, purging completed ones,
/// re-bounding schedules after a clock jump (and releasing the claims of relays that are gone).

#include <cstddef>
#include <cstdlib>
#include <optional>
#include <span>
#include <string_view>

#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/storage/postgres/link.hpp"

namespace outbox::detail::postgres {

/// The rows a command changed.
[[nodiscard]] inline std::size_t changed(const result_handle& r) noexcept {
  return static_cast<std::size_t>(std::strtoull(PQcmdTuples(r.get()), nullptr, 10));
}

[[nodiscard]] inline param optional_text(std::optional<std::string_view> v) {
  return v ? param(std::string(*v)) : param();
}

[[nodiscard]] inline result<std::size_t> reset_events(link& l, std::span<const event_id> ids, timestamp now) {
  if (ids.empty()) return std::size_t{0};
  array_literal list;
  for (const auto& id : ids) list.add(id);
  auto r = l.run_one({l.sql.reset, {std::move(list).str(), text_of(now)}}, "resetting events");
  if (!r) return r.error();
  return changed(*r);
}

[[nodiscard]] inline result<std::size_t> reset_dead_events(link& l, std::optional<std::string_view> user,
                                                           timestamp now) {
  auto r = l.run_one({l.sql.reset_dead, {optional_text(user), text_of(now)}}, "resetting dead events");
  if (!r) return r.error();
  return changed(*r);
}

[[nodiscard]] inline result<std::size_t> purge_completed_events(link& l, timestamp before) {
  auto r = l.run_one({l.sql.purge, {text_of(before)}}, "purging completed events");
  if (!r) return r.error();
  return static_cast<std::size_t>(r->integer(0, 0));
}

/// Retries due later than `retry_limit` are due then; leases ending after `lease_limit` end
/// then, but only this relay's own and those of relays whose connection is gone (another live
/// relay's claims stay its own, so an `options.exclusive` outbox starting beside live relays
/// releases nothing of theirs).
[[nodiscard]] inline result<std::size_t> clamp_events(link& l, timestamp retry_limit, timestamp lease_limit) {
  const query queries[] = {{l.sql.clamp_retries, {text_of(retry_limit)}}, {l.sql.clamp_leases, {text_of(lease_limit), text_of(l.relay_id)}}};
  auto r = l.run(queries, "re-bounding schedules");
  if (!r) return r.error();
  return changed((*r)[0]) + changed((*r)[1]);
}

}  // namespace outbox::detail::postgres
