// outbox::detail::field_index: the seqs of the events holding each value of a field, for the
// memory state's queries by entity id and by type.

#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <string_view>
#include <vector>

#include <outbox/detail/field_index.hpp>

namespace {

using outbox::detail::field_index;

/// The seqs of `value` after `after_seq`, at most `limit` of them.
std::vector<std::uint64_t> page(const field_index& index, std::string_view value, std::uint64_t after_seq = 0,
                                std::size_t limit = 100) {
  std::vector<std::uint64_t> out;
  index.each_after(value, after_seq, [&](std::uint64_t seq) {
    out.push_back(seq);
    return out.size() < limit;
  });
  return out;
}

}  // namespace

TEST_CASE("a field_index lists each value's seqs in order, from after a seq, up to a limit", "[detail][field_index]") {
  field_index index;
  for (std::uint64_t seq = 1; seq <= 9; ++seq) index.add(seq % 3 == 0 ? "three" : "other", seq);
  CHECK(page(index, "three") == std::vector<std::uint64_t>{3, 6, 9});
  CHECK(page(index, "other") == std::vector<std::uint64_t>{1, 2, 4, 5, 7, 8});
  CHECK(page(index, "other", 4) == std::vector<std::uint64_t>{5, 7, 8});
  CHECK(page(index, "other", 3, 2) == std::vector<std::uint64_t>{4, 5});
  CHECK(page(index, "three", 9).empty());
  CHECK(page(index, "three", std::numeric_limits<std::uint64_t>::max()).empty());
  CHECK(page(index, "thre").empty());  // whole values only
  CHECK(page(index, "").empty());
}

TEST_CASE("a field_index forgets removed seqs, and a value with none left", "[detail][field_index]") {
  field_index index;
  index.add("a", 1);
  index.add("a", 5);
  index.add("b", 3);
  index.remove("a", 1);
  index.remove("a", 4);  // not there: nothing happens
  index.remove("c", 1);  // no such value: nothing happens
  CHECK(page(index, "a") == std::vector<std::uint64_t>{5});
  index.remove("a", 5);
  CHECK(page(index, "a").empty());
  index.add("a", 7);  // the value comes back with its new events only
  CHECK(page(index, "a") == std::vector<std::uint64_t>{7});
  CHECK(page(index, "b") == std::vector<std::uint64_t>{3});
}
