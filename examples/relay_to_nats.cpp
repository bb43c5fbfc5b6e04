// A server-side relay: events that services wrote into a SQLite outbox (in the same transaction
// as their own data) leave for NATS JetStream, each one message whose Nats-Msg-Id is the event
// id, so the stream keeps one copy even when the relay dies mid-batch and sends again.
//
//   outbox_relay_to_nats --db PATH [--url URL]... [--user NAME] [--prefix SUBJECT]
//                        [--creds FILE] [--batch N] [--until-drained] [--timeout SECONDS]
//
// The stream must exist and capture `<prefix>.>` (e.g. `nats stream add OUTBOX --subjects
// 'outbox.>'`). Events belong to one user id (the writing service's name, --user, default
// "service"). Without --until-drained it delivers until SIGINT or SIGTERM; with it, it exits
// once nothing of that user is waiting: 0 if everything was delivered, 1 if some event is dead
// (its last_error says why), 2 on a timeout or a failure to start.
#include <outbox/outbox.hpp>
#include <outbox/storage/sqlite.hpp>
#include <outbox/transport/nats.hpp>

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using relay_outbox = outbox::Outbox<outbox::sqlite_storage, outbox::nats_transport>;

struct config {
  std::string db;
  outbox::nats_options nats;
  std::string user = "service";
  std::size_t batch = 100;
  bool until_drained = false;
  std::chrono::seconds timeout{60};
};

int usage(const char* why) {
  std::fprintf(stderr,
               "relay_to_nats: %s\nusage: outbox_relay_to_nats --db PATH [--url URL]... [--user NAME] "
               "[--prefix SUBJECT] [--creds FILE] [--batch N] [--until-drained] [--timeout SECONDS]\n",
               why);
  return 2;
}

bool parse(int argc, char** argv, config& c) {
  std::vector<std::string> urls;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--until-drained") c.until_drained = true;
    else if (!has_value) return false;
    else if (arg == "--db") c.db = argv[++i];
    else if (arg == "--url") urls.emplace_back(argv[++i]);
    else if (arg == "--user") c.user = argv[++i];
    else if (arg == "--prefix") c.nats.subject_prefix = argv[++i];
    else if (arg == "--creds") c.nats.credentials_file = argv[++i];
    else if (arg == "--batch") c.batch = std::strtoul(argv[++i], nullptr, 10);
    else if (arg == "--timeout") c.timeout = std::chrono::seconds(std::strtol(argv[++i], nullptr, 10));
    else return false;
  }
  if (!urls.empty()) c.nats.urls = urls;
  return !c.db.empty() && c.batch > 0;
}

/// Runs until nothing of the user is pending, in flight or waiting for a retry.
int drain(relay_outbox& box, const config& c) {
  const auto deadline = std::chrono::steady_clock::now() + c.timeout;
  for (;;) {
    const outbox::cycle_report report = box.process_once();
    if (report.error) std::fprintf(stderr, "relay_to_nats: %s\n", report.error->what().c_str());
    if (report.claimed == 0 && !report.error) {
      auto stats = box.stats(c.user);
      if (!stats) {
        std::fprintf(stderr, "relay_to_nats: %s\n", stats.error().what().c_str());
        return 2;
      }
      const auto waiting = stats->count(outbox::status::pending) + stats->count(outbox::status::processing) +
                           stats->count(outbox::status::failed);
      if (waiting == 0) {
        std::printf("relay: drained, %zu delivered, %zu dead\n", stats->count(outbox::status::completed),
                    stats->count(outbox::status::dead));
        return stats->count(outbox::status::dead) == 0 ? 0 : 1;
      }
    }
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "relay_to_nats: not drained within %lld s\n", static_cast<long long>(c.timeout.count()));
      return 2;
    }
    // Nothing claimable (retries not yet due) or the broker unreachable: do not spin.
    if (report.claimed == 0 || report.unavailable == report.claimed) std::this_thread::sleep_for(20ms);
  }
}

}  // namespace

int main(int argc, char** argv) {
  config c;
  if (!parse(argc, argv, c)) return usage("--db is required; every option takes a value but --until-drained");

  auto storage = outbox::sqlite_storage::open(c.db);
  if (!storage) {
    std::fprintf(stderr, "relay_to_nats: %s\n", storage.error().what().c_str());
    return 2;
  }
  auto transport = outbox::nats_transport::connect(c.nats);
  if (!transport) {
    std::fprintf(stderr, "relay_to_nats: %s\n", transport.error().what().c_str());
    return 2;
  }

  outbox::options options;
  options.batch_size = c.batch;
  options.poll_interval = 1s;  // a service relay: new events should not wait 30 s
  options.lease = 30s;
  // A broker that answers "retry" is usually back within seconds, not the minutes a phone waits.
  outbox::exponential_backoff backoff({.base = 1s, .factor = 2.0, .cap = 60s});
  relay_outbox box(std::move(*storage), std::move(*transport), outbox::system_clock{}, backoff, options);
  box.on_dead([](const outbox::event& e, const outbox::delivery_result& r) {
    std::fprintf(stderr, "relay_to_nats: event %s is dead: %s\n", e.id.to_string().c_str(), r.error.c_str());
  });
  box.on_error([](const outbox::error& e) { std::fprintf(stderr, "relay_to_nats: %s\n", e.what().c_str()); });
  box.set_user(c.user);
  std::printf("relay: started, %s -> %s\n", c.db.c_str(), c.nats.urls.front().c_str());
  std::fflush(stdout);

  if (c.until_drained) return drain(box, c);

  // Block the stop signals in every thread, start the runner, and wait for one of them here.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  box.start();
  int received = 0;
  sigwait(&stop_signals, &received);
  box.stop();  // the batch in flight finishes and its outcomes are recorded
  std::printf("relay: stopped by signal %d\n", received);
  return 0;
}
