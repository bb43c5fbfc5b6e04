#pragma once
/// \file
/// `outbox::nats_transport`: delivers events into NATS JetStream (nats.c), deduplicated by
/// event id. Link `outbox::nats`.
///
///     outbox::nats_options o;
///     o.urls = {"nats://127.0.0.1:4222"};
///     auto transport = outbox::nats_transport::connect(o).value();   // or the throwing ctor
///
/// Each event becomes one message on `subject(event)` (default `<subject_prefix>.<type>`) with
/// the headers named in `nats_headers`; `Nats-Msg-Id` is the event id, so JetStream drops a
/// resend of a message it already stored within the stream's duplicate window. A batch is
/// published asynchronously and its acks awaited together: one round trip per batch.
///
/// Answers, and why:
/// - an ack: delivered, remote id `<stream>:<sequence>`; a duplicate ack likewise (the stream
///   holds the event already; the sequence is the stored copy's);
/// - not connected when the batch starts, or the connection lost before an event's ack:
///   unavailable. The broker could not be reached, so no attempt is used; a message that did
///   reach the stream before the loss is deduplicated when it is sent again. A failure answered
///   in a batch that then lost its connection counts as unavailable too: a server shutting down
///   answers no responders while its streams close;
/// - no ack within `ack_timeout` while connected: retryable. The message may have been stored
///   (only its ack is missing), so it counts as an attempt and the resend carries the same
///   `Nats-Msg-Id`; a broker that keeps failing to confirm ends as dead, not as a silent loop;
/// - no responders (no stream captures the subject): retryable, since the server is reachable
///   but has nowhere to store it: a missing or misconfigured stream, or one being recreated;
/// - larger than the server's max payload or the stream's max message size, an invalid
///   subject, or a header value with CR/LF: permanent, as a resend cannot change the answer.
///
/// Order: the storages hand over at most one event per ordering key in a batch, and the next
/// event of a key only once the previous one completed, that is once JetStream acknowledged
/// it. So the events of a key enter the stream in append order (rising stream sequence), on
/// whatever subjects `subject` gives them; a consumer that reads the stream, or a filter
/// including every subject a key uses, sees them in that order. A resend after a crash is a
/// duplicate of the stored copy as long as it comes within the stream's duplicate window
/// (JetStream's default is 2 minutes): keep that window above the outbox lease plus the
/// time a relay takes to restart.
///
/// Reconnecting happens inside nats.c (forever, `reconnect_wait` apart); meanwhile sends
/// answer unavailable. Nothing throws out of `send`. `connect` reports invalid configuration
/// as `errc::invalid_argument`; an unreachable server is not an error unless
/// `connect_in_background` is off (then `errc::io_error`).

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nats/nats.h>

#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/transport/nats/answers.hpp"
#include "outbox/transport/nats/handles.hpp"

namespace outbox {

/// The headers each message carries.
namespace nats_headers {
inline constexpr const char* msg_id = "Nats-Msg-Id";  ///< the event id: JetStream's deduplication key
inline constexpr const char* type = "Outbox-Type";
inline constexpr const char* entity_id = "Outbox-Entity-Id";
inline constexpr const char* user_id = "Outbox-User-Id";
inline constexpr const char* ordering_key = "Outbox-Ordering-Key";
inline constexpr const char* attempt = "Outbox-Attempt";  ///< 1 for the first try
}  // namespace nats_headers

/// How to reach NATS and where events go. Checked by `nats_transport::connect`.
struct nats_options {
  /// Servers to try ("nats://host:4222", "tls://host:4222"); nats.c picks among them and
  /// reconnects to any of them.
  std::vector<std::string> urls{"nats://127.0.0.1:4222"};
  /// The default subject is `<subject_prefix>.<event type>`.
  std::string subject_prefix = "outbox";
  /// Chooses each event's subject instead; must give a valid literal subject (an invalid one
  /// answers permanent for that event). Called on the sending thread.
  std::function<std::string(const event&)> subject{};
  /// A NATS credentials file (user JWT and NKey seed); empty: none.
  std::string credentials_file{};
  struct tls_settings {
    bool enabled = false;              ///< require TLS (also implied by tls:// URLs)
    std::string ca_file{};             ///< PEM trust anchors; empty: the system's
    std::string cert_file{};           ///< client certificate chain (PEM), with key_file
    std::string key_file{};
    std::string expected_hostname{};   ///< empty: the host of the URL
  } tls{};
  std::string connection_name = "outbox";
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds reconnect_wait{500};
  /// Longest wait for a batch's acks; those missing then answer retryable.
  std::chrono::milliseconds ack_timeout{5000};
  /// Start even if no server answers yet: nats.c keeps connecting in the background and sends
  /// answer unavailable until it succeeds. Off: `connect` fails with io_error instead.
  bool connect_in_background = true;
  /// Write each message to the socket at once. Off, nats.c's flusher gathers a burst's writes
  /// and sends them about 1 ms later: fewer system calls, a millisecond more per batch.
  bool send_asap = false;
};

/// Delivers batches into JetStream. Move-only; one batch at a time (concurrent sends wait).
class nats_transport {
 public:
  /// Connects as `options` says. invalid_argument for invalid configuration (no URL, a bad
  /// prefix, unreadable credentials or TLS files, a rejected option); io_error if no server
  /// answers, or the TLS handshake fails, and `connect_in_background` is off.
  [[nodiscard]] static result<nats_transport> connect(nats_options options) {
    try {
      auto s = std::make_unique<state>();
      if (auto e = s->open(std::move(options)); e.code) return e;
      return nats_transport(std::move(s));
    } catch (const std::exception& e) {
      return error(errc::io_error, std::string("outbox::nats_transport: ") + e.what());
    }
  }

  /// Throws `outbox::exception` with the error `connect` returns.
  explicit nats_transport(nats_options options) : nats_transport(connect(std::move(options)).value()) {}

  nats_transport(nats_transport&&) noexcept = default;
  nats_transport& operator=(nats_transport&&) noexcept = default;
  ~nats_transport() = default;

  /// Publishes the batch and waits for its acks (at most `ack_timeout`); one result per event.
  void send(std::span<const event> batch, std::span<delivery_result> results) noexcept {
    s_->send(batch, results);
  }

  /// Whether the connection is up now (sends would be tried rather than answered unavailable).
  [[nodiscard]] bool connected() const noexcept { return s_->connected(); }

  /// The subject an event is published on.
  [[nodiscard]] std::string subject_for(const event& e) const { return s_->subject_for(e); }

  /// The nats.c connection, for what the transport does not cover (stream management,
  /// monitoring). Owned by the transport; do not close it.
  [[nodiscard]] natsConnection* connection() const noexcept { return s_->connection.get(); }

 private:
  struct state {
    nats_options options;
    detail::nats::options_ptr nats_options_handle;
    detail::nats::connection_ptr connection;  // declared before `context`: destroyed after it
    detail::nats::context_ptr context;
    detail::nats::statistics_ptr statistics;  // read on the sending thread only

    std::mutex send_mutex;  // one batch at a time

    // The batch in flight, shared with the ack handler (nats.c's subscription thread).
    std::mutex mutex;
    std::condition_variable all_acked;
    bool active = false;
    std::unordered_map<const natsMsg*, std::size_t> in_flight;  // message -> index in the batch
    std::span<delivery_result> results;  // the batch's own, however long the caller's span

    error open(nats_options o) {
      options = std::move(o);
      if (auto e = check(options); e.code) return e;
      natsOptions* raw_options = nullptr;
      if (natsOptions_Create(&raw_options) != NATS_OK) return failed("creating options", NATS_NO_MEMORY);
      nats_options_handle.reset(raw_options);
      natsOptions* opts = raw_options;

      std::vector<const char*> urls;
      for (const auto& url : options.urls) urls.push_back(url.c_str());
      natsStatus s = natsOptions_SetServers(opts, urls.data(), static_cast<int>(urls.size()));
      if (s != NATS_OK) return failed("server URLs", s);
      if ((s = natsOptions_SetName(opts, options.connection_name.c_str())) != NATS_OK) return failed("name", s);
      if ((s = natsOptions_SetTimeout(opts, options.connect_timeout.count())) != NATS_OK)
        return failed("connect_timeout", s);
      if ((s = natsOptions_SetMaxReconnect(opts, -1)) != NATS_OK) return failed("reconnect", s);
      if ((s = natsOptions_SetReconnectWait(opts, options.reconnect_wait.count())) != NATS_OK)
        return failed("reconnect_wait", s);
      // Without a connected callback nats.c would retry in this thread, for ever.
      if (options.connect_in_background &&
          (s = natsOptions_SetRetryOnFailedConnect(opts, true, &state::on_connected, nullptr)) != NATS_OK)
        return failed("connect_in_background", s);
      if (options.send_asap && (s = natsOptions_SetSendAsap(opts, true)) != NATS_OK) return failed("send_asap", s);
      if (!options.credentials_file.empty() &&
          (s = natsOptions_SetUserCredentialsFromFiles(opts, options.credentials_file.c_str(), nullptr)) != NATS_OK)
        return failed("credentials_file", s);
      const auto& tls = options.tls;
      if (tls.enabled && (s = natsOptions_SetSecure(opts, true)) != NATS_OK) return failed("tls", s);
      if (!tls.ca_file.empty() && (s = natsOptions_LoadCATrustedCertificates(opts, tls.ca_file.c_str())) != NATS_OK)
        return failed("tls.ca_file " + tls.ca_file, s);
      if (!tls.cert_file.empty() &&
          (s = natsOptions_LoadCertificatesChain(opts, tls.cert_file.c_str(), tls.key_file.c_str())) != NATS_OK)
        return failed("tls.cert_file/key_file", s);
      if (!tls.expected_hostname.empty() &&
          (s = natsOptions_SetExpectedHostname(opts, tls.expected_hostname.c_str())) != NATS_OK)
        return failed("tls.expected_hostname", s);

      natsConnection* raw_connection = nullptr;
      s = natsConnection_Connect(&raw_connection, opts);
      connection.reset(raw_connection);
      if (s != NATS_OK && !(s == NATS_NOT_YET_CONNECTED && options.connect_in_background)) {
        const std::string why = detail::nats::describe(s);
        connection.reset();
        if (s == NATS_NO_SERVER || s == NATS_TIMEOUT || s == NATS_IO_ERROR || s == NATS_NOT_YET_CONNECTED)
          return error(errc::io_error, "outbox::nats_transport: no NATS server answered: " + why);
        // As a send answers it (unavailable): the server is there, this client cannot trust it
        // or be trusted, which a certificate change on either side can mend without a restart.
        if (s == NATS_SSL_ERROR)
          return error(errc::io_error, "outbox::nats_transport: the TLS handshake failed: " + why);
        return error(errc::invalid_argument, "outbox::nats_transport: connecting failed: " + why);
      }

      jsOptions js_options;
      jsOptions_Init(&js_options);
      js_options.PublishAsync.AckHandler = &state::on_ack;
      js_options.PublishAsync.AckHandlerClosure = this;
      jsCtx* raw_context = nullptr;
      if ((s = natsConnection_JetStream(&raw_context, connection.get(), &js_options)) != NATS_OK)
        return failed("JetStream context", s);
      context.reset(raw_context);
      natsStatistics* raw_statistics = nullptr;
      if ((s = natsStatistics_Create(&raw_statistics)) != NATS_OK) return failed("statistics", s);
      statistics.reset(raw_statistics);
      return {};
    }

    static error check(const nats_options& o) {
      auto invalid = [](std::string what) {
        return error(errc::invalid_argument, "outbox::nats_transport: " + std::move(what));
      };
      if (o.urls.empty()) return invalid("urls must name at least one server");
      for (const auto& url : o.urls) {
        if (url.empty() || url.find_first_of(" \t\r\n,") != std::string::npos)
          return invalid("server URL \"" + url + "\" is empty or holds whitespace or a comma");
      }
      if (o.urls.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) return invalid("too many URLs");
      if (!o.subject && !detail::nats::valid_subject(o.subject_prefix))
        return invalid("subject_prefix \"" + o.subject_prefix + "\" is not a valid NATS subject");
      if (o.connect_timeout.count() <= 0) return invalid("connect_timeout must be positive");
      if (o.reconnect_wait.count() < 0) return invalid("reconnect_wait must not be negative");
      if (o.ack_timeout.count() <= 0) return invalid("ack_timeout must be positive");
      // nats.c only reads these files when it connects; a typo should fail here, not later.
      for (const auto* file : {&o.credentials_file, &o.tls.ca_file, &o.tls.cert_file, &o.tls.key_file}) {
        if (!file->empty() && !std::ifstream(*file).is_open()) return invalid("cannot read " + *file);
      }
      if (o.tls.cert_file.empty() != o.tls.key_file.empty())
        return invalid("tls.cert_file and tls.key_file go together");
      return {};
    }

    static error failed(const std::string& what, natsStatus s) {
      return error(errc::invalid_argument, "outbox::nats_transport: " + what + ": " + detail::nats::describe(s));
    }

    [[nodiscard]] bool connected() const noexcept {
      return connection && natsConnection_Status(connection.get()) == NATS_CONN_STATUS_CONNECTED;
    }

    [[nodiscard]] std::string subject_for(const event& e) const {
      return options.subject ? options.subject(e) : options.subject_prefix + "." + e.type;
    }

    static void on_connected(natsConnection*, void*) {}  // sends look at the status instead

    /// nats.c's ack handler, on its subscription thread: answers the event the message was.
    static void on_ack(jsCtx*, natsMsg* message, jsPubAck* ack, jsPubAckErr* failure, void* closure) {
      auto* self = static_cast<state*>(closure);
      std::optional<delivery_result> answer;
      try {
        answer = detail::nats::answer(ack, failure);  // built before taking the lock the sender needs
      } catch (...) {
        // Out of memory: the pre-filled retryable result stands.
      }
      bool last = false;
      {
        std::lock_guard lock(self->mutex);
        const auto found = self->active ? self->in_flight.find(message) : self->in_flight.end();
        if (found != self->in_flight.end()) {
          if (answer) self->results[found->second] = std::move(*answer);
          self->in_flight.erase(found);
          last = self->in_flight.empty();
        }
      }
      // `self` outlives this: send does not return before nats.c has seen every handler return.
      if (last) self->all_acked.notify_all();
      natsMsg_Destroy(message);  // with an ack handler, the message is ours to free
    }

    void send(std::span<const event> batch, std::span<delivery_result> out) noexcept {
      std::lock_guard one_batch(send_mutex);
      const std::size_t n = std::min(batch.size(), out.size());
      if (n == 0) return;
      try {
        if (!connected()) {
          for (std::size_t i = 0; i < n; ++i) out[i] = unavailable_now();
          return;
        }
      } catch (...) {
        return;  // out of memory: every event keeps its pre-filled retryable result
      }
      // A reconnect between two looks at the status would hide a lost connection; its count
      // cannot.
      const std::uint64_t reconnects_before = reconnects();
      bool lost = false;
      try {
        {
          std::lock_guard lock(mutex);
          in_flight.clear();
          in_flight.reserve(n);
          results = out.first(n);
          active = true;
        }
        for (std::size_t i = 0; i < n; ++i) {
          if (lost) {
            out[i] = unavailable_now();
            continue;
          }
          lost = publish(batch[i], i, out[i]);
        }
        if (!lost) lost = await_acks();
      } catch (...) {
        // Out of memory building a message: what was not answered keeps its retryable default.
      }
      finish(lost || reconnects() != reconnects_before);
    }

    [[nodiscard]] std::uint64_t reconnects() const noexcept {
      std::uint64_t count = 0;
      if (natsConnection_GetStats(connection.get(), statistics.get()) == NATS_OK)
        (void)natsStatistics_GetCounts(statistics.get(), nullptr, nullptr, nullptr, nullptr, &count);
      return count;
    }

    [[nodiscard]] delivery_result unavailable_now() const {
      const char* why = "not connected";
      if (connection) {
        switch (natsConnection_Status(connection.get())) {
          case NATS_CONN_STATUS_RECONNECTING: why = "reconnecting"; break;
          case NATS_CONN_STATUS_CONNECTING: why = "connecting"; break;
          case NATS_CONN_STATUS_CLOSED: why = "connection closed"; break;
          default: break;
        }
      }
      return delivery_result::unavailable(std::string("nats: ") + why);
    }

    /// Publishes one event; its answer arrives through on_ack, unless the publish itself fails
    /// (then `result` gets it here). Returns true if the connection is gone.
    bool publish(const event& e, std::size_t index, delivery_result& result) {
      std::string subject;
      try {
        subject = subject_for(e);
      } catch (const std::exception& x) {
        result = delivery_result::permanent(std::string("nats: the subject function threw: ") + x.what());
        return false;
      } catch (...) {
        result = delivery_result::permanent("nats: the subject function threw");
        return false;
      }
      if (!detail::nats::valid_subject(subject)) {
        result = delivery_result::permanent("nats: \"" + subject + "\" is not a valid subject to publish on");
        return false;
      }
      if (e.payload.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
        result = delivery_result::permanent("nats: payload larger than nats.c can send");
        return false;
      }
      natsMsg* raw = nullptr;
      natsStatus s = natsMsg_Create(&raw, subject.c_str(), nullptr, e.payload.data(), static_cast<int>(e.payload.size()));
      detail::nats::message_ptr message(raw);
      if (s != NATS_OK) {
        result = delivery_result::retryable("nats: creating the message: " + detail::nats::describe(s));
        return false;
      }
      const std::string id = e.id.to_string();
      const std::string attempt = std::to_string(e.attempts);
      const std::pair<const char*, const std::string*> headers[] = {
          {nats_headers::msg_id, &id},           {nats_headers::type, &e.type},
          {nats_headers::entity_id, &e.entity_id}, {nats_headers::user_id, &e.user_id},
          {nats_headers::ordering_key, &e.ordering_key}, {nats_headers::attempt, &attempt}};
      for (const auto& [name, value] : headers) {
        if (!detail::nats::valid_header_value(*value)) {
          result = delivery_result::permanent(std::string("nats: header ") + name + " would hold a line break");
          return false;
        }
        if ((s = natsMsgHeader_Set(message.get(), name, value->c_str())) != NATS_OK) {
          result = delivery_result::retryable("nats: setting a header: " + detail::nats::describe(s));
          return false;
        }
      }
      {
        // Registered first: the ack may arrive before the publish call returns.
        std::lock_guard lock(mutex);
        in_flight.emplace(message.get(), index);
      }
      raw = message.release();
      s = js_PublishMsgAsync(context.get(), &raw, nullptr);
      message.reset(raw);  // null when nats.c took the message
      if (s == NATS_OK) return false;
      {
        std::lock_guard lock(mutex);
        in_flight.erase(message.get());
      }
      if (s == NATS_MAX_PAYLOAD) {
        result = delivery_result::permanent("nats: " + detail::nats::describe(s));
        return false;
      }
      if (detail::nats::is_connection_status(s) || !connected()) {
        result = delivery_result::unavailable("nats: " + detail::nats::describe(s));
        return true;
      }
      result = delivery_result::retryable("nats: publishing: " + detail::nats::describe(s));
      return false;
    }

    /// Waits until every published event is answered, the connection drops (returns true), or
    /// `ack_timeout` passes.
    bool await_acks() {
      const auto deadline = std::chrono::steady_clock::now() + options.ack_timeout;
      std::unique_lock lock(mutex);
      while (!in_flight.empty()) {
        const auto now = std::chrono::steady_clock::now();
        if (now >= deadline) return false;
        // nats.c tells no waiter when the connection drops: look every few milliseconds.
        all_acked.wait_until(lock, std::min(deadline, now + std::chrono::milliseconds(5)));
        if (in_flight.empty()) break;
        lock.unlock();
        const bool up = connected();
        lock.lock();
        if (!up) return true;
      }
      return false;
    }

    /// Ends the batch: answers what is still unanswered, takes those messages back from nats.c
    /// (a late ack then finds nothing to answer), and waits out ack handlers already running,
    /// so none touches `results` after send returns.
    void finish(bool lost) noexcept {
      bool unanswered = false;
      {
        std::lock_guard lock(mutex);
        unanswered = !in_flight.empty();
        if (lost) {
          // A server going down answers what reaches it meanwhile with no responders or store
          // errors: within a batch that lost its connection those are the outage too.
          for (auto& r : results) {
            if (r.outcome == delivery_result::kind::retryable) r.outcome = delivery_result::kind::unavailable;
          }
        }
        for (const auto& [message, index] : in_flight) {
          try {
            results[index] = lost ? delivery_result::unavailable("nats: connection lost before the ack arrived")
                                  : delivery_result::retryable(
                                        "nats: no ack within " + std::to_string(options.ack_timeout.count()) +
                                        " ms; the message may be stored, a resend with the same id is deduplicated");
          } catch (...) {
            // Out of memory: the pre-filled retryable result stands.
          }
        }
        in_flight.clear();
        active = false;
        results = {};
      }
      if (unanswered) {  // otherwise nats.c holds no message of this batch
        detail::nats::pending_list pending;
        (void)js_PublishAsyncGetPendingList(&pending.list, context.get());
      }
      // nats.c counts a message as pending until its handler has returned, and none is pending
      // now but those whose handler runs: this waits only for them, which never block for long.
      (void)js_PublishAsyncComplete(context.get(), nullptr);
    }
  };

  explicit nats_transport(std::unique_ptr<state> s) noexcept : s_(std::move(s)) {}

  std::unique_ptr<state> s_;
};

}  // namespace outbox
