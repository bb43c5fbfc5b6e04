// The README's first program: two saves, delivered through a mock backend.
#include <outbox/outbox.hpp>

#include <iostream>

int main() {
  outbox::mock_transport backend;
  outbox::memory_outbox<outbox::mock_transport> box(outbox::memory_storage(), backend);
  box.set_user("alice");
  box.on_delivered([](const outbox::event& e, const outbox::delivery_result& r) {
    std::cout << e.type << ' ' << e.entity_id << " -> " << r.remote_id << '\n';
  });
  auto steps = box.enqueue({.type = "steps.saved", .entity_id = "steps-2026-11-21T09", .payload = R"({"count":412})"});
  auto weight = box.enqueue({.type = "weight.saved", .entity_id = "weight-2026-11-21", .payload = R"({"kg":71.4})"});
  if (!steps || !weight) return 1;  // a typed outbox::error, e.g. payload_too_large
  while (box.process_once().claimed > 0) {
  }
  const auto stats = box.stats().value();
  std::cout << stats.count(outbox::status::completed) << " of " << stats.total() << " delivered\n";
}
