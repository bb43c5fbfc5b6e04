// The reference app's progress entries: hourly steps, a daily resting heart rate and weigh-ins,
// each saved through an outbox::Repository (the entry and its outbox event in one write) and
// synced to a flaky backend: a few 503s, an offline window and one entry it rejects for good.
// Time is a manual clock, so the retries' backoff passes without waiting.
#include <outbox/outbox.hpp>

#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace std::chrono_literals;

/// Reads one field of the flat JSON objects below; a real app would use its JSON library.
std::string field(std::string_view json, std::string_view name) {
  const std::string key = "\"" + std::string(name) + "\":";
  const auto at = json.find(key);
  if (at == std::string_view::npos) return {};
  const auto start = at + key.size();
  std::string value(json.substr(start, json.find_first_of(",}", start) - start));
  return value.starts_with('"') ? value.substr(1, value.size() - 2) : value;
}

/// Steps of one hour. The natural key (with the user and the collection: user + metric + date +
/// hour) makes a re-save of the same hour update the stored entry instead of adding another.
struct hourly_steps {
  static constexpr std::string_view collection = "steps";
  std::string id, user_id, date;
  int hour = 0, count = 0;
  std::string natural_key() const { return date + (hour < 10 ? "T0" : "T") + std::to_string(hour); }
  std::string to_payload() const {
    return R"({"user":")" + user_id + R"(","date":")" + date + R"(","hour":)" + std::to_string(hour) +
           R"(,"count":)" + std::to_string(count) + "}";
  }
  static hourly_steps from_payload(std::string_view j) {
    return {"", field(j, "user"), field(j, "date"), std::stoi(field(j, "hour")), std::stoi(field(j, "count"))};
  }
  std::string label() const { return natural_key() + "  " + std::to_string(count) + " steps"; }
};

/// One resting heart rate per user and day: the watch recomputes it during the day.
struct resting_heart_rate {
  static constexpr std::string_view collection = "resting_hr";
  std::string id, user_id, date;
  int bpm = 0;
  std::string natural_key() const { return date; }
  std::string to_payload() const {
    return R"({"user":")" + user_id + R"(","date":")" + date + R"(","bpm":)" + std::to_string(bpm) + "}";
  }
  static resting_heart_rate from_payload(std::string_view j) {
    return {"", field(j, "user"), field(j, "date"), std::stoi(field(j, "bpm"))};
  }
  std::string label() const { return date + "     " + std::to_string(bpm) + " bpm"; }
};

/// A weigh-in. No natural key: every new entry is its own (the repository assigns an id).
struct weight {
  static constexpr std::string_view collection = "weight";
  std::string id, user_id;
  double kg = 0;
  std::string kg_text() const {
    char text[32];
    return std::string(text, std::to_chars(text, text + sizeof text, kg).ptr);  // shortest exact form
  }
  std::string to_payload() const { return R"({"user":")" + user_id + R"(","kg":)" + kg_text() + "}"; }
  static weight from_payload(std::string_view j) { return {"", field(j, "user"), std::stod(field(j, "kg"))}; }
  std::string label() const { return "#" + id.substr(id.size() - 6) + "        " + kg_text() + " kg"; }
};

template <class Entity>
using repository = outbox::Repository<Entity, outbox::memory_storage, outbox::coalesce_unsent, outbox::manual_clock>;

/// Saves an entry and returns its id. A save fails only on a storage error or an invalid entry;
/// this example treats both as fatal (value() throws).
template <class Entity>
std::string save(repository<Entity>& repo, Entity entry) {
  return repo.save(std::move(entry)).value().id;
}

}  // namespace

int main() {
  outbox::manual_clock clock;
  outbox::mock_transport backend;
  // The backend's bad day: the first try of three step uploads gets a 503 (retried with backoff),
  // and it validates weights, refusing a typo for good (422: retrying would not help).
  backend.add_rule({.type = "steps.created", .attempt = 1}, outbox::delivery_result::retryable("503 unavailable"), 3);
  backend.set_script([](const outbox::event& e, std::size_t) -> std::optional<outbox::delivery_result> {
    if (e.type.starts_with("weight.") && std::stod(field(e.payload, "kg")) < 20)
      return outbox::delivery_result::permanent("422 weight must be 20-400 kg");
    return std::nullopt;
  });
  outbox::Outbox<outbox::memory_storage, outbox::mock_transport, outbox::manual_clock> box(outbox::memory_storage(),
                                                                                          backend, clock);
  repository<hourly_steps> steps(box);  // all three share the outbox's storage: one atomic write each
  repository<resting_heart_rate> resting(box);
  repository<weight> weights(box);
  box.set_user("alice");  // login: only the logged-in user's entries sync

  // One 30 s poll of the reference design. While offline every claim comes back unsent (no
  // attempt used), so stop for this poll instead of spinning.
  auto poll = [&] {
    clock.advance(30s);
    for (auto r = box.process_once(); r.claimed > 0 && r.unavailable < r.claimed; r = box.process_once()) {
    }
  };
  auto unsettled = [&] {  // events neither delivered nor dead
    const auto stats = box.stats().value();
    return stats.total() - stats.count(outbox::status::completed) - stats.count(outbox::status::dead);
  };

  const std::string day = "2026-11-21";
  for (int h = 7; h <= 10; ++h) save(steps, {.id = "", .user_id = "alice", .date = day, .hour = h, .count = 400 + h});
  poll();
  // The pedometer saves the current hour again as the count grows: the same entry is updated.
  save(steps, {.id = "", .user_id = "alice", .date = day, .hour = 10, .count = 1250});

  backend.set_offline(true);  // the phone loses signal for ten minutes; saves keep working
  save(resting, {.id = "", .user_id = "alice", .date = day, .bpm = 58});
  for (int i = 0; i < 20; ++i) poll();
  backend.set_offline(false);
  save(resting, {.id = "", .user_id = "alice", .date = day, .bpm = 56});  // recomputed: one entry per day

  // Ten quick edits (a slider) before the next poll: the unsent event is rewritten each time,
  // so the backend hears of the entry once, with its last value.
  std::string weigh_in;
  for (int i = 0; i < 10; ++i) weigh_in = save(weights, {.id = weigh_in, .user_id = "alice", .kg = 70.0 + i / 5.0});
  save(weights, {.id = "", .user_id = "alice", .kg = 7.14});  // a typo the backend will reject
  for (int i = 0; i < 240 && unsettled() > 0; ++i) poll();

  std::size_t synced = 0, rejected = 0;
  auto print = [&](auto& repo) {
    const auto rows = repo.query().value();  // named: a range-for over value() of a temporary would dangle
    for (const auto& s : rows) {
      synced += s.sync == outbox::sync_status::synced;
      rejected += !s.sync_error.empty();
      std::printf("%-10s %-26s %-7s %s\n", std::string(repo.collection()).c_str(), s.entity.label().c_str(),
                  std::string(to_string(s.sync)).c_str(), (s.sync_error.empty() ? s.remote_id : s.sync_error).c_str());
    }
    return rows.size();
  };
  const std::size_t step_entries = print(steps), resting_entries = print(resting), weight_entries = print(weights);
  std::vector<std::string> weigh_in_sent;  // what the backend received for the slider-edited entry
  for (const auto& d : backend.deliveries())
    if (d.entity_id == weigh_in) weigh_in_sent.push_back(d.payload);
  const auto stats = box.stats().value();
  std::printf("%zu entries: %zu synced, %zu rejected; %zu events delivered, %zu dead, %zu lost\n",
              step_entries + resting_entries + weight_entries, synced, rejected,
              stats.count(outbox::status::completed), stats.count(outbox::status::dead), unsettled());

  // What this program promises; CI runs it as a test.
  const bool ok = step_entries == 4 && resting_entries == 1 && weight_entries == 2 && synced == 6 && rejected == 1 &&
                  unsettled() == 0 && backend.duplicates() == 0 &&
                  steps.find_by_natural_key("alice", "2026-11-21T10").value()->entity.count == 1250 &&
                  weigh_in_sent == std::vector{weights.find(weigh_in).value()->entity.to_payload()};
  if (!ok) std::puts("UNEXPECTED: see the expectations at the end of progress_entries.cpp");
  return ok ? 0 : 1;
}
