#pragma once
// A real HTTP server for the HTTP transport's tests: cpp-httplib in this process, on 127.0.0.1
// and an ephemeral port (HTTPS when given a certificate), answering POSTs with whatever the test scripts. It records every
// request it sees, can be stopped (connections are then refused) and started again on the same
// port, and is always stopped when it goes out of scope.

#include <httplib.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace outbox_test {

class http_server {
 public:
  /// A request as the server saw it.
  struct request {
    std::string path, body, idempotency_key, event_type, entity_id, attempt, authorization, content_type;
    int remote_port = 0;  ///< the client's end of the connection: equal ports, one connection
  };

  /// Answers the n-th request (1-based); the default answers 201 with a Location header.
  using script = std::function<void(const httplib::Request&, httplib::Response&, std::size_t n)>;

  http_server() { start(0); }
  /// Serves HTTPS with this certificate and key (not owned; they must outlive the server).
  http_server(X509* cert, EVP_PKEY* key) : cert_(cert), key_(key) { start(0); }
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;
  ~http_server() { stop(); }

  /// Binds 127.0.0.1:`port` (0: any free port) and serves on a thread of its own.
  void start(int port) {
    std::unique_ptr<httplib::Server> server;
    if (cert_ != nullptr) server = std::make_unique<httplib::SSLServer>(cert_, key_);
    else server = std::make_unique<httplib::Server>();
    // A worker per kept-alive connection: more than the transport ever opens at once.
    server->new_task_queue = [] { return new httplib::ThreadPool(40); };
    server->set_keep_alive_max_count(1'000'000);
    server->set_tcp_nodelay(true);  // answers in one go, not held back for a delayed ACK
    server->Post(R"(/.*)", [this](const httplib::Request& req, httplib::Response& res) { serve(req, res); });
    const int bound = port == 0 ? server->bind_to_any_port("127.0.0.1") : (server->bind_to_port("127.0.0.1", port) ? port : -1);
    if (bound <= 0) throw std::runtime_error("http_server: cannot bind 127.0.0.1:" + std::to_string(port));
    port_ = bound;
    server_ = std::move(server);
    thread_ = std::thread([s = server_.get()] { s->listen_after_bind(); });
    // stop() only works on a server that is listening. A server not listening within seconds
    // had listen_after_bind fail, which returns at once: its thread can be joined.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!server_->is_running()) {
      if (std::chrono::steady_clock::now() > deadline) {
        thread_.join();
        server_.reset();
        throw std::runtime_error("http_server: 127.0.0.1:" + std::to_string(port_) + " did not start listening");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  /// Closes the listening socket: new connections are refused until start(port()).
  void stop() {
    if (!server_) return;
    server_->stop();
    thread_.join();
    server_.reset();
  }

  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] std::string url() const {
    return std::string(cert_ != nullptr ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_);
  }

  void set_script(script s) {
    std::lock_guard lock(mutex_);
    script_ = std::move(s);
  }

  [[nodiscard]] std::vector<request> requests() const {
    std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  void serve(const httplib::Request& req, httplib::Response& res) {
    script s;
    std::size_t n = 0;
    {
      std::lock_guard lock(mutex_);
      requests_.push_back({req.path, req.body, req.get_header_value("Idempotency-Key"),
                           req.get_header_value("X-Outbox-Event-Type"), req.get_header_value("X-Outbox-Entity-Id"),
                           req.get_header_value("X-Outbox-Attempt"), req.get_header_value("Authorization"),
                           req.get_header_value("Content-Type"), req.remote_port});
      n = requests_.size();
      s = script_;
    }
    if (s) {
      s(req, res, n);
      return;
    }
    res.status = 201;
    res.set_header("Location", "/things/" + req.get_header_value("Idempotency-Key"));
  }

  mutable std::mutex mutex_;
  script script_;
  std::vector<request> requests_;
  X509* cert_ = nullptr;
  EVP_PKEY* key_ = nullptr;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace outbox_test
