// outbox::errc, its category, outbox::error, outbox::exception and outbox::result<T>.

#include <catch2/catch.hpp>

#include <memory>
#include <vector>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include <outbox/outbox.hpp>

namespace {

// result<T> converts to bool only explicitly, so `int n = r;` style mistakes do not compile.
static_assert(std::is_constructible_v<bool, outbox::result<int>>);
static_assert(!std::is_convertible_v<outbox::result<int>, bool>);
static_assert(std::is_constructible_v<bool, outbox::result<void>>);
static_assert(!std::is_convertible_v<outbox::result<void>, bool>);

// outbox::errc takes part in std::error_code comparisons.
static_assert(std::is_error_code_enum_v<outbox::errc>);

// outbox::exception is a std::system_error, so generic handlers catch it.
static_assert(std::is_base_of_v<std::system_error, outbox::exception>);

}  // namespace

TEST_CASE("errc category is named outbox", "[error]") {
  CHECK(std::string(outbox::error_category().name()) == "outbox");
  const std::error_code code = outbox::make_error_code(outbox::errc::busy);
  CHECK(std::string(code.category().name()) == "outbox");
  CHECK(&code.category() == &outbox::error_category());
}

TEST_CASE("errc converts implicitly to a std::error_code of the outbox category", "[error]") {
  const std::error_code code = outbox::errc::not_found;
  CHECK(code.value() == static_cast<int>(outbox::errc::not_found));
  CHECK(code.category() == outbox::error_category());
  CHECK(code == outbox::errc::not_found);
  CHECK(code != outbox::errc::busy);
  CHECK(static_cast<bool>(code));  // every errc value is an error, none is "success"
}

TEST_CASE("errc codes are distinct from std::errc codes with the same value", "[error]") {
  const std::error_code ours = outbox::errc::invalid_argument;
  const std::error_code generic = std::make_error_code(std::errc::invalid_argument);
  CHECK(ours != generic);
  CHECK(ours != std::errc::invalid_argument);
}

TEST_CASE("every errc has its own message", "[error]") {
  using outbox::errc;
  const std::pair<errc, const char*> expected[] = {
      {errc::invalid_argument, "invalid argument"},
      {errc::payload_too_large, "payload too large"},
      {errc::no_active_user, "no active user"},
      {errc::not_found, "not found"},
      {errc::invalid_state, "invalid state for this operation"},
      {errc::storage_failure, "storage failure"},
      {errc::io_error, "I/O error"},
      {errc::disk_full, "disk full"},
      {errc::busy, "storage busy"},
      {errc::corrupt_data, "corrupt data"},
      {errc::schema_mismatch, "schema mismatch"},
      {errc::schema_too_new, "schema written by a newer version"},
      {errc::already_open, "storage already open elsewhere"},
      {errc::closed, "closed"},
      {errc::unauthorized, "unauthorized"},
  };
  for (const auto& [code, message] : expected) {
    INFO("errc value " << static_cast<int>(code));
    CHECK(outbox::make_error_code(code).message() == message);
  }
}

TEST_CASE("an errc value outside the enumeration has a generic message", "[error]") {
  CHECK(outbox::error_category().message(0) == "unknown outbox error");
  CHECK(outbox::error_category().message(9999) == "unknown outbox error");
}

TEST_CASE("error what() names the category, the code's message and the detail", "[error]") {
  const outbox::error e(outbox::errc::corrupt_data, "events.log: checksum mismatch at offset 4096");
  CHECK(e.what() == "outbox: corrupt data: events.log: checksum mismatch at offset 4096");
}

TEST_CASE("error what() without a detail message is the category and the code's message", "[error]") {
  const outbox::error e(outbox::errc::disk_full);
  CHECK(e.message.empty());
  CHECK(e.what() == "outbox: disk full");
}

TEST_CASE("error built from a foreign std::error_code keeps that category in what()", "[error]") {
  const outbox::error e(std::make_error_code(std::errc::no_space_on_device), "events.log");
  CHECK(e.code == std::errc::no_space_on_device);
  CHECK(e.what() == std::string("generic: ") + e.code.message() + ": events.log");
}

TEST_CASE("error compares equal to its errc and unequal to others", "[error]") {
  const outbox::error e(outbox::errc::busy, "locked by pid 42");
  CHECK(e == outbox::errc::busy);
  CHECK_FALSE(e == outbox::errc::closed);
  CHECK(e.code == outbox::errc::busy);
  CHECK(e.message == "locked by pid 42");
}

TEST_CASE("result holding a value reports success and gives the value", "[error][result]") {
  outbox::result<int> r = 42;
  CHECK(r.has_value());
  CHECK(static_cast<bool>(r));
  CHECK(r.value() == 42);
  CHECK(*r == 42);

  r.value() = 7;  // value() of an lvalue is a reference into the result
  CHECK(*r == 7);

  const outbox::result<int>& const_ref = r;
  CHECK(const_ref.value() == 7);
  CHECK(*const_ref == 7);
}

TEST_CASE("result operator-> reaches the members of the value", "[error][result]") {
  outbox::result<std::string> r = std::string("payload");
  CHECK(r->size() == 7);
  r->append("!");
  CHECK(r.value() == "payload!");
}

TEST_CASE("result of an rvalue moves its value out", "[error][result]") {
  outbox::result<std::unique_ptr<int>> r = std::make_unique<int>(5);
  std::unique_ptr<int> taken = std::move(r).value();
  REQUIRE(taken);
  CHECK(*taken == 5);
}

TEST_CASE("result holding an error reports failure and gives the error", "[error][result]") {
  const outbox::result<int> r = outbox::error(outbox::errc::not_found, "no event 42");
  CHECK_FALSE(r.has_value());
  CHECK_FALSE(static_cast<bool>(r));
  CHECK(r.error() == outbox::errc::not_found);
  CHECK(r.error().message == "no event 42");
}

TEST_CASE("result built from an errc and a message holds that error", "[error][result]") {
  const outbox::result<std::string> r(outbox::errc::payload_too_large, "2 MiB > 1 MiB");
  REQUIRE_FALSE(r);
  CHECK(r.error().code == outbox::errc::payload_too_large);
  CHECK(r.error().message == "2 MiB > 1 MiB");
}

TEST_CASE("result value() on an error throws outbox::exception with the same code and message",
          "[error][result]") {
  outbox::result<int> r(outbox::errc::corrupt_data, "events.log: bad frame");
  try {
    (void)r.value();
    FAIL("value() of a failed result did not throw");
  } catch (const outbox::exception& ex) {
    CHECK(ex.code() == outbox::errc::corrupt_data);
    CHECK(ex.error() == outbox::errc::corrupt_data);
    CHECK(ex.error().message == "events.log: bad frame");
    CHECK(ex.error().what() == "outbox: corrupt data: events.log: bad frame");
    CHECK(std::string(ex.what()) == "outbox: corrupt data: events.log: bad frame");
  }
}

TEST_CASE("result value() on an error throws from const and rvalue results too", "[error][result]") {
  const outbox::result<int> const_result(outbox::errc::closed);
  CHECK_THROWS_AS(const_result.value(), outbox::exception);

  outbox::result<std::string> rvalue_result(outbox::errc::io_error, "read failed");
  try {
    (void)std::move(rvalue_result).value();
    FAIL("value() of a failed rvalue result did not throw");
  } catch (const outbox::exception& ex) {
    CHECK(ex.code() == outbox::errc::io_error);
    CHECK(ex.error().message == "read failed");
  }
}

TEST_CASE("result value() on an error can be caught as std::system_error", "[error][result]") {
  const outbox::result<int> r(outbox::errc::busy);
  try {
    (void)r.value();
    FAIL("value() of a failed result did not throw");
  } catch (const std::system_error& ex) {
    CHECK(ex.code() == outbox::errc::busy);
  }
}

TEST_CASE("default result<void> is success and value() does not throw", "[error][result]") {
  const outbox::result<void> r;
  CHECK(r.has_value());
  CHECK(static_cast<bool>(r));
  CHECK_NOTHROW(r.value());
}

TEST_CASE("result<void> holding an error reports failure and value() throws it", "[error][result]") {
  const outbox::result<void> r(outbox::errc::storage_failure, "transaction rolled back");
  CHECK_FALSE(r.has_value());
  CHECK_FALSE(static_cast<bool>(r));
  CHECK(r.error() == outbox::errc::storage_failure);
  CHECK(r.error().message == "transaction rolled back");
  try {
    r.value();
    FAIL("value() of a failed result<void> did not throw");
  } catch (const outbox::exception& ex) {
    CHECK(ex.code() == outbox::errc::storage_failure);
    CHECK(ex.error().message == "transaction rolled back");
  }
}

TEST_CASE("result<void> built from an outbox::error keeps it", "[error][result]") {
  const outbox::result<void> r = outbox::error(outbox::errc::schema_too_new, "version 9");
  REQUIRE_FALSE(r);
  CHECK(r.error().what() == "outbox: schema written by a newer version: version 9");
}

TEST_CASE("exception built from an error carries the same code and message", "[error]") {
  const outbox::error e(outbox::errc::already_open, "events.db");
  const outbox::exception ex(e);
  CHECK(ex.code() == e.code);
  CHECK(ex.error().code == e.code);
  CHECK(ex.error().message == e.message);
}

TEST_CASE("iterating value() of a temporary result does not dangle", "[error][result]") {
  auto make = [] { return outbox::result<std::vector<std::string>>(std::vector<std::string>{"steps", "weight"}); };
  std::string joined;
  for (const auto& name : make().value()) joined += name;  // the temporary result dies before the loop body
  CHECK(joined == "stepsweight");
}

TEST_CASE("exception what() is the error's what(), with or without a detail message", "[error]") {
  const outbox::error detailed(outbox::errc::corrupt_data, "x.db: enabling WAL: file is not a database");
  CHECK(std::string(outbox::exception(detailed).what()) == detailed.what());
  CHECK(std::string(outbox::exception(detailed).what()) ==
        "outbox: corrupt data: x.db: enabling WAL: file is not a database");
  const outbox::error bare(outbox::errc::closed);
  CHECK(std::string(outbox::exception(bare).what()) == "outbox: closed");
  const outbox::error foreign(std::make_error_code(std::errc::no_space_on_device), "events.log");
  CHECK(std::string(outbox::exception(foreign).what()) == foreign.what());
}

TEST_CASE("exception what() survives a copy of the exception", "[error]") {
  std::string seen;
  try {
    try {
      outbox::result<void>(outbox::errc::busy, "locked by pid 42").value();
    } catch (const outbox::exception& ex) {
      throw outbox::exception(ex);  // a copy, as an exception_ptr or a rethrow may make
    }
  } catch (const std::exception& ex) {
    seen = ex.what();
  }
  CHECK(seen == "outbox: storage busy: locked by pid 42");
}
