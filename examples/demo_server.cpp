// The backend of the main demo (outbox_demo starts it): an HTTP server on 127.0.0.1 that stores
// each change once by its Idempotency-Key and counts the copies it receives of a key it already
// has. It misbehaves on purpose: answers 503 to a share of requests, goes offline for windows of
// 5-25 minutes (503 with a Retry-After to the window's end), rejects a few changes for good
// (422), and takes its time (a latency of up to --latency-ms per request).
//
//     outbox_demo_server [--seed N] [--failure-rate X] ... [--hold-from SECONDS]
//
// It prints "listening on http://127.0.0.1:<port>" once it accepts requests (the port is chosen
// by the system), serves POST /v1/<collection> for the app, GET /report for its view, and
// POST /release to let go of a held batch. With --hold-from it keeps the answers to the first
// batch sent at or after that simulated time, prints "holding <events> <seconds>" once the
// whole batch has arrived, and waits until released: the moment the driver kills the app.
// SIGTERM or SIGINT stops it.
//
// Its faults depend only on the seed and on what it is sent (the entity, the route, the body,
// the attempt number, the app's simulated clock), never on its own clock or on event ids: the
// same app run meets the same faults every time.
#include "demo_shared.hpp"

#include <httplib.h>

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <cstdint>
#include <iostream>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

struct config {
  std::uint64_t seed = 7;
  double failure_rate = 0.10;
  double offline_rate = 0.02;
  double reject_rate = 0.002;
  int latency_ms = 2;
  std::optional<std::int64_t> hold_from;
};

std::optional<std::int64_t> whole_number(const std::string& text) {
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

/// The backend's state: what it stored, what it counted, the batch it holds.
class backend {
 public:
  explicit backend(const config& cfg) : cfg_(cfg) {}

  void handle(const httplib::Request& req, httplib::Response& res) {
    const std::string key = req.get_header_value("Idempotency-Key");
    const auto now = whole_number(req.get_header_value(demo::clock_header));
    const auto attempt = whole_number(req.get_header_value("X-Outbox-Attempt"));
    if (key.empty() || !now || !attempt) {
      res.status = 400;
      res.set_content(std::string("Idempotency-Key, X-Outbox-Attempt and ") + demo::clock_header + " are required",
                      "text/plain");
      return;
    }
    const std::uint64_t position =
        demo::position_of(req.get_header_value("X-Outbox-Entity-Id") + '\n' + req.path + '\n' + req.body);
    const auto tries = static_cast<std::uint64_t>(*attempt);
    const double wait = demo::draw(cfg_.seed, demo::latency, position, tries) * cfg_.latency_ms;
    std::this_thread::sleep_for(std::chrono::microseconds(static_cast<std::int64_t>(wait * 1000)));

    std::unique_lock lock(mutex_);
    ++requests_;
    answer(key, *now, position, tries, req.path, res);
    if (!holds(*now, req.get_header_value(demo::batch_header))) return;
    // The answer is ready but not sent: the app waits for it until it is killed.
    held_cv_.wait(lock, [&] { return released_; });
  }

  void release() {
    {
      std::lock_guard lock(mutex_);
      released_ = true;
    }
    held_cv_.notify_all();
  }

  /// The report: counts, then one line per stored key with its copies and first arrival.
  [[nodiscard]] std::string report() {
    std::lock_guard lock(mutex_);
    std::ostringstream out;
    out << "requests " << requests_ << "\nstored " << stored_.size() << "\nduplicates " << duplicates_
        << "\nfailed " << failed_ << "\noffline " << offline_ << "\nrejected " << rejected_ << "\nheld " << held_
        << "\nheld_at " << (held_at_ ? std::to_string(*held_at_) : "-") << '\n';
    for (const auto& [key, d] : stored_) out << "key " << key << ' ' << d.copies << ' ' << d.first_at << '\n';
    return out.str();
  }

 private:
  struct delivery {
    std::size_t copies = 0;
    std::int64_t first_at = 0;  // simulated seconds
    std::string location;
  };

  void answer(const std::string& key, std::int64_t now, std::uint64_t position, std::uint64_t attempt,
              const std::string& path, httplib::Response& res) {
    if (const auto back = offline_until(now)) {
      ++offline_;
      res.status = 503;
      res.set_header("Retry-After", std::to_string(*back - now));
      res.set_content("backend offline", "text/plain");
      return;
    }
    if (const auto found = stored_.find(key); found != stored_.end()) {
      ++found->second.copies;
      ++duplicates_;
      res.status = 200;  // the same answer as the first time: the change is stored once
      res.set_header("Location", found->second.location);
      return;
    }
    const double u = demo::draw(cfg_.seed, demo::backend_answer, position, attempt);
    if (u < cfg_.reject_rate) {
      ++rejected_;
      res.status = 422;
      res.set_content(path.substr(path.rfind('/') + 1) + " failed validation", "text/plain");
      return;
    }
    if (u < cfg_.reject_rate + cfg_.failure_rate) {
      ++failed_;
      res.status = 503;
      res.set_content("service unavailable", "text/plain");
      return;
    }
    delivery& d = stored_[key];
    d.copies = 1;
    d.first_at = now;
    d.location = path + "/" + key;
    res.status = 201;
    res.set_header("Location", d.location);
  }

  /// The end of the offline window `now` falls in (seconds), if any. Windows start at a poll
  /// with a chance of offline_rate per minute, last 5-25 minutes, and never overlap.
  std::optional<std::int64_t> offline_until(std::int64_t now) {
    const std::int64_t poll_seconds = demo::poll_interval.count();
    const auto poll = static_cast<std::uint64_t>(std::max<std::int64_t>(now, 0) / poll_seconds);
    while (window_end_.size() <= poll) {  // the end of the window each poll is in (or 0)
      const std::uint64_t p = window_end_.size();
      const std::uint64_t previous = p == 0 ? 0 : window_end_.back();
      if (previous > p) {
        window_end_.push_back(previous);
      } else if (demo::draw(cfg_.seed, demo::network_drop, p) < cfg_.offline_rate / 2) {
        window_end_.push_back(p + 2 * (5 + static_cast<std::uint64_t>(demo::draw(cfg_.seed, demo::drop_length, p) * 20)));
      } else {
        window_end_.push_back(0);
      }
    }
    if (window_end_[poll] <= poll) return std::nullopt;
    return static_cast<std::int64_t>(window_end_[poll]) * poll_seconds;
  }

  /// Whether this request belongs to the batch to hold: the first one sent at or after
  /// --hold-from. Says "holding" on stdout once all of its requests are here.
  bool holds(std::int64_t now, const std::string& batch) {
    if (!cfg_.hold_from || released_ || now < *cfg_.hold_from) return false;
    if (held_batch_.empty()) {
      held_batch_ = batch;
      held_at_ = now;
    }
    if (batch != held_batch_) return false;
    ++held_;
    const auto size = whole_number(batch.substr(batch.find('/') + 1));
    if (size && held_ == static_cast<std::size_t>(*size))
      std::cout << "holding " << held_ << ' ' << now << std::endl;
    return true;
  }

  const config cfg_;
  std::mutex mutex_;
  std::condition_variable held_cv_;
  std::map<std::string, delivery> stored_;
  std::vector<std::uint64_t> window_end_;
  std::size_t requests_ = 0, duplicates_ = 0, failed_ = 0, offline_ = 0, rejected_ = 0, held_ = 0;
  std::string held_batch_;
  std::optional<std::int64_t> held_at_;
  bool released_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  config cfg;
  CLI::App cli("The outbox demo's backend: stores each change once by its Idempotency-Key, misbehaving on purpose.",
               "outbox_demo_server");
  cli.option_defaults()->always_capture_default();
  cli.add_option("--seed", cfg.seed, "seed of every fault: the same seed and requests give the same answers")
      ->type_name("N")
      ->check(demo::within(std::uint64_t{0}, std::numeric_limits<std::uint64_t>::max()));
  cli.add_option("--failure-rate", cfg.failure_rate, "share of requests answered 503, [0, 1)")
      ->type_name("X")
      ->check(demo::within(0.0, 1.0, true));
  cli.add_option("--offline-rate", cfg.offline_rate, "chance per minute of going offline for 5-25 min, [0, 1)")
      ->type_name("X")
      ->check(demo::within(0.0, 1.0, true));
  cli.add_option("--reject-rate", cfg.reject_rate, "share of changes answered 422, rejected for good, [0, 1)")
      ->type_name("X")
      ->check(demo::within(0.0, 1.0, true));
  cli.add_option("--latency-ms", cfg.latency_ms, "longest time taken to answer a request, 0-1000 ms")
      ->type_name("MS")
      ->check(demo::within(0, 1000));
  cli.add_option("--hold-from", cfg.hold_from, "keep the answers to the first batch sent at or after this simulated second")
      ->type_name("SECONDS")
      ->check(demo::within(std::int64_t{0}, std::numeric_limits<std::int64_t>::max()));
  const int parsed = demo::parse(cli, argc, argv, [&] {
    if (cfg.failure_rate + cfg.reject_rate >= 1)
      throw CLI::ValidationError("--failure-rate, --reject-rate", "their sum must be below 1");
  });
  if (parsed >= 0) return parsed;

  // SIGTERM and SIGINT are taken by one thread, which stops the server; SIGPIPE (an answer to
  // an app that was killed) is ignored.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  backend state(cfg);
  httplib::Server server;
  server.new_task_queue = [] { return new httplib::ThreadPool(64); };  // held requests keep their threads
  server.set_keep_alive_max_count(std::numeric_limits<int>::max());
  server.set_tcp_nodelay(true);  // answers go out at once, not after the client's delayed ACK
  server.Post(R"(/v1/.+)", [&](const httplib::Request& req, httplib::Response& res) { state.handle(req, res); });
  server.Get("/report", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(state.report(), "text/plain");
  });
  server.Post("/release", [&](const httplib::Request&, httplib::Response& res) {
    state.release();
    res.set_content("released\n", "text/plain");
  });

  const int port = server.bind_to_any_port("127.0.0.1");
  if (port <= 0) {
    std::cerr << "outbox_demo_server: cannot listen on 127.0.0.1\n";
    return 1;
  }
  std::thread stopper([&] {
    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    state.release();
    while (!server.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // stop() needs a listener
    server.stop();
  });
  stopper.detach();
  std::cout << "listening on http://127.0.0.1:" << port << std::endl;
  return server.listen_after_bind() ? 0 : 1;
}
