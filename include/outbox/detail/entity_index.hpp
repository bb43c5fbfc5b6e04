#pragma once
/// \file
/// `entity_index`: the entity rows of a `memory_state` and the indexes over them (natural keys
/// per collection and user; occurrence time per collection and user). Not synchronised.

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "outbox/clock.hpp"
#include "outbox/entity.hpp"

namespace outbox::detail {

class entity_index {
 public:
  using key = std::pair<std::string, std::string>;  // (collection, id)

  [[nodiscard]] const std::map<key, entity_record>& rows() const noexcept { return rows_; }
  [[nodiscard]] const entity_record* at(const key& k) const {
    auto found = rows_.find(k);
    return found == rows_.end() ? nullptr : &found->second;
  }
  /// For changes that keep the indexed fields (collection, user, natural key, occurred_at).
  [[nodiscard]] entity_record* at(const key& k) {
    auto found = rows_.find(k);
    return found == rows_.end() ? nullptr : &found->second;
  }
  /// The id of the row of `collection` and `user` that holds `natural_key`, if any.
  [[nodiscard]] const std::string* natural_key_owner(const std::string& collection, const std::string& user,
                                                     const std::string& natural_key) const {
    auto owner = natural_keys_.find({collection, user, natural_key});
    return owner == natural_keys_.end() ? nullptr : &owner->second;
  }

  /// Puts `row` under `k`, replacing the row there, and indexes it.
  void put(const key& k, entity_record row) {
    auto found = rows_.find(k);
    if (found != rows_.end()) unindex(found->second);
    auto& stored = rows_.insert_or_assign(k, std::move(row)).first->second;
    index(stored);
  }
  void remove(const key& k) {
    auto found = rows_.find(k);
    if (found == rows_.end()) return;
    unindex(found->second);
    rows_.erase(found);
  }

  [[nodiscard]] std::optional<entity_record> find(std::string_view collection, std::string_view id) const {
    auto found = rows_.find(key{std::string(collection), std::string(id)});
    if (found == rows_.end()) return std::nullopt;
    return found->second;
  }
  [[nodiscard]] std::optional<entity_record> find_by_key(std::string_view collection, std::string_view user,
                                                         std::string_view natural_key) const {
    auto owner = natural_keys_.find({std::string(collection), std::string(user), std::string(natural_key)});
    if (owner == natural_keys_.end()) return std::nullopt;
    return find(collection, owner->second);
  }

  [[nodiscard]] std::vector<entity_record> query(const entity_query& q) const {
    std::vector<const entity_record*> hits;
    const timestamp from = q.from.value_or(timestamp::min());
    auto it = q.user_id ? by_time_.lower_bound({q.collection, *q.user_id, from, std::string()})
                        : by_time_.lower_bound({q.collection, std::string(), timestamp::min(), std::string()});
    for (; it != by_time_.end(); ++it) {
      const auto& [collection, user, when, id] = *it;
      if (collection != q.collection || (q.user_id && user != *q.user_id)) break;
      if (when < from) continue;
      if (q.until && when >= *q.until) {
        if (q.user_id) break;  // sorted by time within one user
        continue;
      }
      const entity_record& row = rows_.at({collection, id});
      if (q.sync && row.sync != *q.sync) continue;
      hits.push_back(&row);
      if (q.user_id && hits.size() >= q.limit) break;
    }
    std::stable_sort(hits.begin(), hits.end(), [](const entity_record* a, const entity_record* b) {
      return std::tie(a->occurred_at, a->id) < std::tie(b->occurred_at, b->id);
    });
    if (hits.size() > q.limit) hits.resize(q.limit);
    std::vector<entity_record> rows;
    rows.reserve(hits.size());
    for (const auto* row : hits) rows.push_back(*row);
    return rows;
  }

 private:
  void index(const entity_record& row) {
    by_time_.insert({row.collection, row.user_id, row.occurred_at, row.id});
    if (!row.natural_key.empty()) natural_keys_[{row.collection, row.user_id, row.natural_key}] = row.id;
  }
  void unindex(const entity_record& row) {
    by_time_.erase({row.collection, row.user_id, row.occurred_at, row.id});
    if (!row.natural_key.empty()) natural_keys_.erase({row.collection, row.user_id, row.natural_key});
  }

  std::map<key, entity_record> rows_;
  std::map<std::tuple<std::string, std::string, std::string>, std::string> natural_keys_;  // (collection, user, key) -> id
  std::set<std::tuple<std::string, std::string, timestamp, std::string>> by_time_;  // (collection, user, occurred_at, id)
};

}  // namespace outbox::detail
