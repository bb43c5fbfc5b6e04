// A transport of your own: here, a spool directory that another program drains (a print queue,
// a sync agent, a mail drop). Each event becomes one file, written under a temporary name and
// renamed into place, so the reader never sees half a file. For an HTTP backend use the shipped
// outbox::http_transport instead; this shows how any destination maps onto the four outcomes:
//   written           -> delivered, the file name as the remote id
//   spool not there   -> unavailable: the reader's volume is not mounted; no attempt is used
//   no route for type -> permanent: retrying will not help, the event goes to dead
//   a write failed    -> retryable: backoff decides when to try again
#include <outbox/outbox.hpp>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <span>
#include <string>
#include <system_error>

namespace {

class spool_transport {
 public:
  explicit spool_transport(std::filesystem::path dir) : dir_(std::move(dir)) {}

  void send(std::span<const outbox::event> batch, std::span<outbox::delivery_result> results) {
    std::error_code ec;
    if (!std::filesystem::is_directory(dir_, ec)) {
      for (auto& r : results) r = outbox::delivery_result::unavailable("spool " + dir_.string() + " is not there");
      return;
    }
    for (std::size_t i = 0; i < batch.size(); ++i) results[i] = write(batch[i]);
  }

 private:
  outbox::delivery_result write(const outbox::event& e) const {
    if (e.type.find('.') == std::string::npos) return outbox::delivery_result::permanent("no route for type " + e.type);
    // The event id makes the name unique and makes a repeated delivery overwrite, not duplicate.
    const std::string name = e.type + "-" + e.id.to_string() + ".json";
    const std::filesystem::path partial = dir_ / (name + ".partial");
    {
      std::ofstream out(partial, std::ios::binary | std::ios::trunc);
      out << e.payload;
      if (!out.flush()) return outbox::delivery_result::retryable("cannot write " + partial.string());
    }
    std::error_code ec;
    std::filesystem::rename(partial, dir_ / name, ec);
    if (ec) return outbox::delivery_result::retryable("cannot rename into " + dir_.string() + ": " + ec.message());
    return outbox::delivery_result::delivered(name);
  }

  std::filesystem::path dir_;
};

static_assert(outbox::transport<spool_transport>);

}  // namespace

int main() {
  const auto spool = std::filesystem::temp_directory_path() / "outbox-example-spool";
  std::filesystem::remove_all(spool);

  outbox::Outbox<outbox::memory_storage, spool_transport> box{outbox::memory_storage(), spool_transport(spool)};
  box.set_user("alice");
  box.on_delivered([](const outbox::event& e, const outbox::delivery_result& r) {
    std::cout << "delivered " << e.type << " as " << r.remote_id << '\n';
  });
  box.on_dead([](const outbox::event& e, const outbox::delivery_result& r) {
    std::cout << "dead      " << e.type << ": " << r.error << '\n';
  });
  auto weight = box.enqueue({.type = "weight.saved", .entity_id = "w1", .payload = R"({"kg":71.4})"});
  auto odd = box.enqueue({.type = "ping", .entity_id = "p1", .payload = "{}"});
  if (!weight || !odd) return 1;

  const auto offline = box.process_once();  // the spool is not there yet: nothing is used up
  std::cout << offline.unavailable << " waiting for the spool\n";
  std::filesystem::create_directories(spool);
  const auto online = box.process_once();

  const bool written = std::filesystem::exists(spool / box.find(*weight).value()->remote_id);
  std::filesystem::remove_all(spool);
  return offline.unavailable == 2 && box.find(*weight).value()->attempts == 1 && online.delivered == 1 &&
                 online.dead == 1 && written
             ? 0
             : 1;
}
