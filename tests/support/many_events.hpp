#pragma once
// A batch of new events for one user, over 7 ordering keys named after a prefix.

#include <outbox/testing/storage_conformance.hpp>

#include <string>
#include <vector>

namespace outbox_test {

inline std::vector<outbox::event> many(outbox::testing::storage_fixture& f, const std::string& user, std::size_t n,
                                       const std::string& key_prefix) {
  std::vector<outbox::event> out;
  for (std::size_t i = 0; i < n; ++i) out.push_back(f.make(user, key_prefix + std::to_string(i % 7)));
  return out;
}

}  // namespace outbox_test
