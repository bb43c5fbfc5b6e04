#pragma once
// A private nats-server with JetStream for one test run (also used by bench/nats.cpp):
// `nats-server -js -sd DIR/js -a 127.0.0.1 -p -1 --ports_file_dir DIR -l DIR/log`, started as a
// child that dies with this process (PR_SET_PDEATHSIG), stopped by its pid (SIGTERM) when the
// object goes away, its temporary directory removed. More arguments (TLS: `--tls --tlscert F
// --tlskey F`) follow those. Restarts reuse the directory and port,
// so the stream survives. Plus a small stream administrator over nats.c's JetStream API.

#include <outbox/transport/nats/handles.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace outbox_test {

/// Where Debian puts the server; OUTBOX_NATS_SERVER overrides it.
inline std::string nats_server_binary() {
  if (const char* path = std::getenv("OUTBOX_NATS_SERVER")) return path;
  return "/usr/sbin/nats-server";
}

inline bool nats_server_available() { return ::access(nats_server_binary().c_str(), X_OK) == 0; }

/// Forks and execs `argv` as a child that gets SIGKILL when this process dies; stdout goes to
/// `stdout_fd` (or /dev/null when -1). Returns the child's pid.
inline pid_t spawn_child(const std::vector<std::string>& argv, int stdout_fd = -1) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = ::getpid();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    // Only async-signal-safe calls until exec: the parent may have other threads.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl took effect
    const int null_fd = ::open("/dev/null", O_RDWR);
    ::dup2(stdout_fd >= 0 ? stdout_fd : null_fd, 1);
    if (stdout_fd >= 0) ::close(stdout_fd);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

/// Waits for `pid` to end; returns its wait status.
inline int reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return status;
}

class nats_server {
 public:
  /// Starts the server with `more_arguments` after the usual ones; throws std::runtime_error if
  /// it does not come up.
  explicit nats_server(std::vector<std::string> more_arguments = {})
      : dir_(make_dir()), more_arguments_(std::move(more_arguments)) {
    try {
      start();
    } catch (...) {
      remove_dir();
      throw;
    }
  }
  nats_server(const nats_server&) = delete;
  nats_server& operator=(const nats_server&) = delete;
  ~nats_server() {
    stop();
    remove_dir();
  }

  /// Starts it again after stop/kill: same store directory, same port.
  void start() {
    if (pid_ > 0) return;
    const std::string port = port_ > 0 ? std::to_string(port_) : "-1";
    std::filesystem::remove(ports_file_path_);
    std::vector<std::string> argv = {nats_server_binary(), "-js", "-sd", (dir_ / "js").string(), "-a", "127.0.0.1",
                                     "-p", port, "--ports_file_dir", dir_.string(), "-l", (dir_ / "log").string()};
    argv.insert(argv.end(), more_arguments_.begin(), more_arguments_.end());
    pid_ = spawn_child(argv);
    ports_file_path_ = dir_ / ("nats-server_" + std::to_string(pid_) + ".ports");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    static const std::regex port_in_file(R"((nats|tls)://127\.0\.0\.1:(\d+))");  // tls: TLS required
    for (;;) {
      std::ifstream in(ports_file_path_);
      std::stringstream text;
      text << in.rdbuf();
      std::smatch m;
      const std::string content = text.str();
      if (std::regex_search(content, m, port_in_file)) {
        scheme_ = m[1].str();
        port_ = std::stoi(m[2].str());
        return;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("nats-server exited at startup; see " + (dir_ / "log").string());
      }
      if (std::chrono::steady_clock::now() > deadline) {
        stop();
        throw std::runtime_error("nats-server wrote no ports file within 10 s");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  /// SIGTERM and wait: the server shuts down and closes its clients' connections.
  void stop() { end(SIGTERM); }
  /// SIGKILL and wait.
  void kill() { end(SIGKILL); }
  /// Freezes it (SIGSTOP): connections stay open, nothing is answered. resume() undoes it.
  void pause() const {
    if (pid_ > 0) ::kill(pid_, SIGSTOP);
  }
  void resume() const {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
  }

  [[nodiscard]] bool running() const { return pid_ > 0; }
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] std::string url() const { return scheme_ + "://127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] const std::filesystem::path& dir() const { return dir_; }

 private:
  static std::filesystem::path make_dir() {
    auto dir = std::filesystem::temp_directory_path() /
               ("outbox-nats-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(dir);
    return dir;
  }

  void end(int signal) {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGCONT);  // a paused server cannot act on SIGTERM
    ::kill(pid_, signal);
    reap(pid_);
    pid_ = -1;
  }

  void remove_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  std::filesystem::path dir_;
  std::vector<std::string> more_arguments_;
  std::string scheme_ = "nats";
  std::filesystem::path ports_file_path_;
  pid_t pid_ = -1;
  int port_ = -1;
};

/// A message as the stream stores it.
struct stored_message {
  std::uint64_t sequence = 0;
  std::string subject;
  std::string data;
  std::map<std::string, std::string> headers;
};

/// Creates streams and reads them back, over its own connection.
class stream_admin {
 public:
  /// `ca_file`: the PEM trust anchors of a server that requires TLS.
  explicit stream_admin(const std::string& url, const std::string& ca_file = {}) {
    natsOptions* raw_options = nullptr;
    natsStatus s = natsOptions_Create(&raw_options);
    outbox::detail::nats::options_ptr options(raw_options);
    if (s != NATS_OK) throw std::runtime_error("stream_admin: no memory for options");
    // Tests restart the server: reconnect soon and for ever.
    natsOptions_SetURL(raw_options, url.c_str());
    natsOptions_SetMaxReconnect(raw_options, -1);
    natsOptions_SetReconnectWait(raw_options, 50);
    if (!ca_file.empty() && natsOptions_LoadCATrustedCertificates(raw_options, ca_file.c_str()) != NATS_OK)
      throw std::runtime_error("stream_admin: cannot load " + ca_file);
    natsConnection* nc = nullptr;
    // The server may be (re)starting: try for a while.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while ((s = natsConnection_Connect(&nc, raw_options)) != NATS_OK) {
      if (std::chrono::steady_clock::now() > deadline)
        throw std::runtime_error("stream_admin: cannot connect to " + url + ": " + natsStatus_GetText(s));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    connection_.reset(nc);
    jsCtx* js = nullptr;
    if ((s = natsConnection_JetStream(&js, nc, nullptr)) != NATS_OK)
      throw std::runtime_error(std::string("stream_admin: JetStream context: ") + natsStatus_GetText(s));
    context_.reset(js);
  }

  /// A file-backed stream capturing `subjects`, with JetStream's default duplicate window;
  /// -1: no limit.
  void create(const std::string& name, std::vector<std::string> subjects, int64_t max_msgs = -1,
              int32_t max_msg_size = -1) {
    std::vector<const char*> subject_ptrs;
    for (const auto& s : subjects) subject_ptrs.push_back(s.c_str());
    jsStreamConfig config;
    jsStreamConfig_Init(&config);
    config.Name = name.c_str();
    config.Subjects = subject_ptrs.data();
    config.SubjectsLen = static_cast<int>(subject_ptrs.size());
    config.Storage = js_FileStorage;
    config.MaxMsgs = max_msgs;
    config.MaxMsgSize = max_msg_size;
    jsStreamInfo* info = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    const natsStatus s = js_AddStream(&info, context_.get(), &config, nullptr, &code);
    outbox::detail::nats::stream_info_ptr owned(info);
    if (s != NATS_OK)
      throw std::runtime_error("stream_admin: creating stream " + name + ": " + outbox::detail::nats::describe(s));
  }

  /// How many messages the stream holds, and its last sequence.
  std::pair<std::uint64_t, std::uint64_t> state(const std::string& name) {
    jsStreamInfo* info = nullptr;
    const natsStatus s = js_GetStreamInfo(&info, context_.get(), name.c_str(), nullptr, nullptr);
    outbox::detail::nats::stream_info_ptr owned(info);
    if (s != NATS_OK)
      throw std::runtime_error("stream_admin: stream info of " + name + ": " + outbox::detail::nats::describe(s));
    return {info->State.Msgs, info->State.LastSeq};
  }

  /// Every message of the stream, in stream order.
  std::vector<stored_message> messages(const std::string& name) {
    std::vector<stored_message> out;
    const auto [count, last] = state(name);
    out.reserve(count);
    for (std::uint64_t seq = 1; seq <= last; ++seq) {
      natsMsg* raw = nullptr;
      const natsStatus s = js_GetMsg(&raw, context_.get(), name.c_str(), seq, nullptr, nullptr);
      outbox::detail::nats::message_ptr msg(raw);
      if (s == NATS_NOT_FOUND) continue;
      if (s != NATS_OK)
        throw std::runtime_error("stream_admin: message " + std::to_string(seq) + ": " +
                                 outbox::detail::nats::describe(s));
      stored_message m;
      m.sequence = seq;
      m.subject = natsMsg_GetSubject(msg.get());
      m.data.assign(natsMsg_GetData(msg.get()), static_cast<std::size_t>(natsMsg_GetDataLength(msg.get())));
      const char** keys = nullptr;
      int key_count = 0;
      if (natsMsgHeader_Keys(msg.get(), &keys, &key_count) == NATS_OK) {
        for (int k = 0; k < key_count; ++k) {
          const char* value = nullptr;
          if (natsMsgHeader_Get(msg.get(), keys[k], &value) == NATS_OK) m.headers[keys[k]] = value;
        }
        std::free(static_cast<void*>(keys));
      }
      out.push_back(std::move(m));
    }
    return out;
  }

  [[nodiscard]] jsCtx* context() const { return context_.get(); }
  [[nodiscard]] natsConnection* connection() const { return connection_.get(); }

 private:
  outbox::detail::nats::connection_ptr connection_;  // before the context: destroyed after it
  outbox::detail::nats::context_ptr context_;
};

}  // namespace outbox_test
