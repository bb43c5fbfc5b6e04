#pragma once
/// \file
/// The storage contract as Catch2 (v2) tests. Every shipped storage passes it; run it against
/// your own storage policy with a factory type:
///
///     struct my_factory {
///       using storage_type = my_storage;
///       my_storage make() { return my_storage(...); }   // a fresh, empty storage
///     };
///     OUTBOX_STORAGE_CONFORMANCE_TESTS(my_factory)
///     OUTBOX_ENTITY_STORAGE_CONFORMANCE_TESTS(my_factory)   // if it also keeps entities
///
/// in one test source linked with a Catch2 main. Each SECTION gets a fresh storage.
///
/// The suite is written in chapters (one function each, in outbox::testing::conformance) over
/// the headers in <outbox/testing/conformance/>; the two functions here run them all.

#include <catch2/catch.hpp>

#include <initializer_list>

#include <outbox/outbox.hpp>  // the single header provides it too
#include <outbox/testing/conformance/delivery.hpp>
#include <outbox/testing/conformance/entity_events.hpp>
#include <outbox/testing/conformance/entity_rows.hpp>
#include <outbox/testing/conformance/fixture.hpp>
#include <outbox/testing/conformance/inspection.hpp>

namespace outbox::testing {

namespace conformance {

/// A chapter of the suite, run over the one storage and fixture of a test case's pass.
template <class Storage>
using chapter = void (*)(Storage&, storage_fixture&);

/// Runs `chapters` in order over a fresh storage from `Factory` and a fresh fixture. Catch2 runs
/// the test case once per SECTION, so each section gets a storage of its own.
template <class Factory>
void run_chapters(std::initializer_list<chapter<typename Factory::storage_type>> chapters) {
  Factory factory;
  typename Factory::storage_type s = factory.make();
  storage_fixture f;
  for (const auto& run : chapters) run(s, f);
}

}  // namespace conformance

/// The suite. `Factory::make()` must return a fresh, empty storage.
template <class Factory>
void run_storage_conformance() {
  using Storage = typename Factory::storage_type;
  static_assert(storage<Storage>, "the factory's storage_type must satisfy outbox::storage");
  using namespace conformance;
  run_chapters<Factory>({append_chapter<Storage>, claim_chapter<Storage>, lease_chapter<Storage>,
                         outcome_chapter<Storage>, reset_chapter<Storage>, query_chapter<Storage>,
                         audit_query_chapter<Storage>, schedule_chapter<Storage>, stats_chapter<Storage>, stats_walk_chapter<Storage>});
}

/// The entity half of the contract (`outbox::entity_storage`), for storages that also keep the
/// rows a Repository writes. `Factory::make()` must return a fresh, empty storage.
///
/// In short: `commit` applies a whole `entity_change` (row and event) or, answering
/// `errc::conflict` / `errc::invalid_argument`, nothing at all; rows carry a version the storage
/// bumps on every write; natural keys are unique per (collection, user); `replace` and `drop`
/// touch only an event no transport can have seen (pending, attempts == 0); `record` and lease
/// expiry write delivery outcomes back onto the row named by the event's entity_type/entity_id.
template <class Factory>
void run_entity_storage_conformance() {
  using Storage = typename Factory::storage_type;
  static_assert(entity_storage<Storage>, "the factory's storage_type must satisfy outbox::entity_storage");
  using namespace conformance;
  run_chapters<Factory>({commit_chapter<Storage>, commit_refusal_chapter<Storage>, natural_key_chapter<Storage>,
                         replace_chapter<Storage>, drop_chapter<Storage>, write_back_chapter<Storage>,
                         write_back_limits_chapter<Storage>, entity_query_chapter<Storage>});
}

}  // namespace outbox::testing

/// Defines the conformance test case for each factory type given.
#define OUTBOX_STORAGE_CONFORMANCE_TESTS(...)                                                   \
  TEMPLATE_TEST_CASE("storage conformance", "[storage][conformance]", __VA_ARGS__) {            \
    ::outbox::testing::run_storage_conformance<TestType>();                                     \
  }

/// Defines the entity conformance test case for each factory type given; the storages must
/// satisfy `outbox::entity_storage`.
#define OUTBOX_ENTITY_STORAGE_CONFORMANCE_TESTS(...)                                                  \
  TEMPLATE_TEST_CASE("entity storage conformance", "[storage][conformance][entity]", __VA_ARGS__) {    \
    ::outbox::testing::run_entity_storage_conformance<TestType>();                                     \
  }
