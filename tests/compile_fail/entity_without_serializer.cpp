// Must not compile: the entity has an id, a user and a collection, but no serialiser.
#include <outbox/outbox.hpp>

#include <string>
#include <string_view>

struct note {
  static constexpr std::string_view collection = "notes";
  std::string id;
  std::string user_id;
  std::string text;
};

int main() {
  outbox::memory_storage storage;
  outbox::Repository<note, outbox::memory_storage> notes(storage);
  (void)notes;
}
