// libFuzzer target for the file storage's record reader (outbox/detail/log_format.hpp).
//
// Any bytes, read as a segment with and without salvage, must neither crash nor trip
// AddressSanitizer or UndefinedBehaviorSanitizer, and every group the reader returns must replay
// into the in-memory index exactly as file_storage::state::apply_group replays it.
//
// Each input is read twice over: as the bytes of a segment file, and as a list of record bodies
// ([u16 length][body]...) that the target frames with a correct CRC-32C behind a valid header,
// so that mutations reach the record decoder instead of stopping at the checksum.
//
// Built with -DOUTBOX_FUZZ_INVARIANTS=1 it also checks, through the index's public interface,
// that the replayed index agrees with itself, and then runs the delivery operations over it;
// that mode looks for what a decodable but inconsistent log does to the index.
#include <outbox/detail/log_format.hpp>
#include <outbox/detail/memory_state.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#ifndef OUTBOX_FUZZ_INVARIANTS
#define OUTBOX_FUZZ_INVARIANTS 0
#endif

namespace {

namespace wire = outbox::detail::log;

/// What file_storage::state::apply_group does with a group, minus its byte accounting and its
/// report of records that contradict the state (which it leaves out, as here).
void apply_group(outbox::detail::memory_state& memory, const std::vector<wire::record>& group) {
  for (const auto& rec : group) {
    if (const auto* m = std::get_if<wire::marker>(&rec)) {
      if (m->type == wire::record_type::snapshot) memory = outbox::detail::memory_state();
      memory.set_next_seq(m->next_seq);
    } else if (const auto* e = std::get_if<outbox::event>(&rec)) {
      (void)memory.restore_event(*e);  // a contradicting record is left out, as the storage does
    } else if (const auto* seq = std::get_if<std::uint64_t>(&rec)) {
      memory.restore_removed_event(*seq);
    } else if (const auto* row = std::get_if<outbox::entity_record>(&rec)) {
      (void)memory.restore_entity(*row);
    } else if (const auto* gone = std::get_if<wire::removed_entity>(&rec)) {
      memory.restore_removed_entity({gone->collection, gone->id});
    }
  }
}

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "outbox_fuzz_log_reader: %s\n", what);
  std::abort();
}

/// What scan_segment promises about its own answer.
void check_scan(const wire::segment_scan& scan, std::string_view bytes, bool salvage) {
  if (scan.valid_end > bytes.size()) broken("valid_end beyond the input");
  if (scan.bad_offset && *scan.bad_offset > bytes.size()) broken("bad_offset beyond the input");
  if (scan.bad_header && scan.valid_end != 0) broken("a bad header with a valid end");
  if (!scan.bad_offset && !scan.bad_header && !scan.groups.empty() && scan.valid_end < wire::header_size)
    broken("groups read before the header ended");
  if (!salvage && scan.bad_offset && scan.valid_end > *scan.bad_offset) broken("valid_end past the first bad record");
  for (const auto& group : scan.groups) {
    const auto* m = group.empty() ? nullptr : std::get_if<wire::marker>(&group.back());
    if (!m || m->type != wire::record_type::commit) broken("a group that does not end with its commit");
  }
}

#if OUTBOX_FUZZ_INVARIANTS
/// The index agrees with itself, as far as its public interface shows, and survives being used.
void check_index(outbox::detail::memory_state& memory) {
  using namespace std::chrono_literals;
  const outbox::timestamp now = outbox::from_micros(1767225600000000);
  std::size_t events = 0;
  std::uint64_t previous = 0;
  for (const outbox::event& e : memory.events()) {
    ++events;
    if (memory.event_at(e.seq) != &e) broken("an event stored under another seq");
    if (e.seq <= previous) broken("the events are not visited in seq order");
    previous = e.seq;
    auto found = memory.find(e.id);
    if (!found || found->seq != e.seq) broken("find(id) does not lead to the event with that id");
  }
  auto stats = memory.stats(std::nullopt, now);
  if (stats.total() != events) broken("the status index does not count every event once");
  for (const auto& [key, row] : memory.entities()) {
    if (row.natural_key.empty()) continue;
    auto owner = memory.find_entity_by_key(row.collection, row.user_id, row.natural_key);
    if (!owner || owner->id != row.id) broken("the natural-key index misses a row");
  }
  // Then use it: claim everything claimable, answer every claim each way, purge, reset.
  std::vector<std::string> users;
  for (const outbox::event& e : memory.events()) users.push_back(e.user_id);
  for (const auto& user : users) {
    std::vector<outbox::event> claimed;
    (void)memory.claim({user, now, now + 60s, 1000}, claimed);
    std::vector<outbox::outcome> outcomes;
    for (std::size_t i = 0; i < claimed.size(); ++i) {
      outbox::outcome o;
      o.id = claimed[i].id;
      o.lease = claimed[i].lease;
      o.to = i % 3 == 0 ? outbox::status::completed : i % 3 == 1 ? outbox::status::failed : outbox::status::dead;
      o.attempts = claimed[i].attempts;
      o.at = now;
      o.retry_after = now + 30s;
      outcomes.push_back(o);
    }
    (void)memory.record(outcomes);
    (void)memory.next_wake(user);
  }
  (void)memory.reset_dead(std::nullopt, now);
  (void)memory.clamp_schedule(now, now);
  (void)memory.purge_completed(now + 1s);
  (void)memory.stats(std::nullopt, now + 1h);
}
#endif

/// A scan that keeps completed events undecoded (as file_storage opens) reads the same groups,
/// with every completed event of the full scan, in order, in its runs.
void check_keeping_completed(const wire::segment_scan& full, std::string_view bytes, bool salvage) {
  const wire::segment_scan kept = wire::scan_segment(bytes, salvage, true);
  if (kept.valid_end != full.valid_end || kept.bad_offset != full.bad_offset ||
      kept.valid_after_bad != full.valid_after_bad || kept.bad_header != full.bad_header ||
      kept.snapshot != full.snapshot || kept.group_offsets != full.group_offsets || kept.groups.size() != full.groups.size())
    broken("keeping completed events changed what the scan read");
  std::size_t next = 0;  // in kept.completed
  for (std::size_t g = 0; g < full.groups.size(); ++g) {
    std::size_t k = 0;
    for (const auto& rec : full.groups[g]) {
      const auto* e = std::get_if<outbox::event>(&rec);
      if (e && e->status == outbox::status::completed) {
        const auto* run = k < kept.groups[g].size() ? std::get_if<wire::completed_run>(&kept.groups[g][k]) : nullptr;
        if (!run || next < run->first || next >= run->first + run->count || next >= kept.completed.size())
          broken("a completed event missing from its run");
        const auto& c = kept.completed[next];
        if (c.seq != e->seq || c.id != e->id || c.completed_at != e->completed_at || c.user_id != e->user_id ||
            c.entity_id != e->entity_id || c.type != e->type ||
            c.body + c.body_size > bytes.size())
          broken("a completed event kept unlike the one decoded");
        if (++next == run->first + run->count) ++k;
      } else if (k >= kept.groups[g].size() || kept.groups[g][k++].index() != rec.index()) {
        broken("a record other than a completed event read differently");
      }
    }
    if (k != kept.groups[g].size()) broken("a kept group longer than the decoded one");
  }
  if (next != kept.completed.size()) broken("completed events kept outside the groups");
}

void replay(std::string_view bytes, bool salvage) {
  const wire::segment_scan scan = wire::scan_segment(bytes, salvage);
  check_scan(scan, bytes, salvage);
  check_keeping_completed(scan, bytes, salvage);
  outbox::detail::memory_state memory;
  for (const auto& group : scan.groups) apply_group(memory, group);
#if OUTBOX_FUZZ_INVARIANTS
  check_index(memory);
#endif
}

/// The input as record bodies, each framed with its length and a correct checksum.
std::string framed(std::string_view input) {
  std::string segment = wire::segment_header();
  while (input.size() >= 2) {
    std::size_t length = static_cast<unsigned char>(input[0]) |
                         static_cast<std::size_t>(static_cast<unsigned char>(input[1])) << 8;
    input.remove_prefix(2);
    if (length > input.size()) length = input.size();
    const std::string_view body = input.substr(0, length);
    input.remove_prefix(length);
    wire::writer w(segment);
    w.u32(static_cast<std::uint32_t>(body.size()));
    w.u32(outbox::detail::crc32c(body));
    segment.append(body);
  }
  return segment;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  replay(input, false);
  replay(input, true);
  const std::string segment = framed(input);
  replay(segment, false);
  replay(segment, true);
  return 0;
}
