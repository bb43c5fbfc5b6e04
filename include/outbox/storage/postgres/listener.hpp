#pragma once
/// \file
/// LISTEN/NOTIFY: a thread with a connection of its own that waits for the notification the
/// schema's trigger sends for new events, and calls a wake-up function (the outbox's runner).
/// It connects again when its connection breaks, and wakes once after each (re)connection, for
/// what was appended while it was not listening. Polling stays the fallback: a relay that
/// misses a notification finds the events at its next poll.

#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <utility>

#include "outbox/storage/postgres/connection.hpp"

namespace outbox::detail::postgres {

class listener {
 public:
  listener(std::string conninfo, std::string channel, std::function<void()> wake)
      : conninfo_(std::move(conninfo)), channel_(std::move(channel)), wake_(std::move(wake)) {
    if (::pipe(stop_pipe_) != 0) stop_pipe_[0] = stop_pipe_[1] = -1;
    thread_ = std::thread([this] { run(); });
  }
  listener(const listener&) = delete;
  listener& operator=(const listener&) = delete;
  ~listener() {
    stop_.store(true);
    if (stop_pipe_[1] >= 0) {
      const char byte = 1;
      [[maybe_unused]] const auto n = ::write(stop_pipe_[1], &byte, 1);
    }
    if (thread_.joinable()) thread_.join();
    for (int fd : stop_pipe_)
      if (fd >= 0) ::close(fd);
  }

 private:
  void run() noexcept {
    connection_handle conn;
    while (!stop_.load()) {
      if (!conn.get() || PQstatus(conn.get()) != CONNECTION_OK) {
        conn = connection_handle();
        if (auto fresh = connect(conninfo_); fresh) {
          const std::string listen = "LISTEN \"" + channel_ + "\"";  // the checked schema name's channel
          result_handle r(PQexec(fresh->get(), listen.c_str()));
          if (PQresultStatus(r.get()) == PGRES_COMMAND_OK) {
            conn = std::move(*fresh);
            call_wake();  // what was appended while nobody listened
          }
        }
        if (!conn.get()) {
          wait(-1, std::chrono::milliseconds(500));
          continue;
        }
      }
      if (!wait(PQsocket(conn.get()), std::chrono::seconds(5))) continue;
      if (PQconsumeInput(conn.get()) != 1) {
        conn = connection_handle();  // broken: connect again
        continue;
      }
      bool any = false;
      while (PGnotify* n = PQnotifies(conn.get())) {
        PQfreemem(n);
        any = true;
      }
      if (any) call_wake();
    }
  }

  /// Waits until `fd` is readable (true), or the listener is stopped or the time is up (false).
  bool wait(int fd, std::chrono::milliseconds timeout) noexcept {
    pollfd fds[2] = {{stop_pipe_[0], POLLIN, 0}, {fd, POLLIN, 0}};
    const int n = ::poll(fds, fd >= 0 ? 2 : 1, static_cast<int>(timeout.count()));
    if (n <= 0 || stop_.load()) return false;
    return fd >= 0 && (fds[1].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
  }

  void call_wake() noexcept {
    try {
      wake_();
    } catch (...) {  // a wake-up that throws is only a missed wake-up: polling finds the events
    }
  }

  std::string conninfo_;
  std::string channel_;
  std::function<void()> wake_;
  std::atomic<bool> stop_{false};
  int stop_pipe_[2] = {-1, -1};
  std::thread thread_;
};

}  // namespace outbox::detail::postgres
