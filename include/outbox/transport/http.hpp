#pragma once
/// \file
/// `outbox::http_transport`: delivers events to an HTTP backend with libcurl. Link `outbox::http`.
///
///     outbox::http_transport backend({.base_url = "https://api.example.com/v1"});
///     outbox::Outbox<outbox::sqlite_storage, outbox::http_transport> box(std::move(storage), std::move(backend));
///
/// By default each event is one POST to `base_url` + a route from its type, the payload as
/// body, `Idempotency-Key: <event id>` (the same on every retry, so the backend can drop the
/// duplicates an at-least-once outbox sends after a crash). The events of a batch are sent
/// together through libcurl's multi interface, up to `max_in_flight` at once, on connections
/// kept alive from one batch to the next (HTTP/2 multiplexed when the server offers it).
/// `http_options` says what each answer means; nothing throws out of `send`.

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "outbox/core.hpp"
#include "outbox/error.hpp"
#include "outbox/event.hpp"
#include "outbox/transport/http/answer.hpp"
#include "outbox/transport/http/batch.hpp"
#include "outbox/transport/http/curl.hpp"
#include "outbox/transport/http/options.hpp"
#include "outbox/transport/http/request.hpp"

namespace outbox {

namespace detail::http {

/// One request in flight: its easy handle (reused, with its connection, from request to
/// request), what was sent and what came back. Lives at a fixed address: libcurl holds pointers.
struct transfer {
  easy_handle easy;
  header_list headers;
  http_request request;
  http_response response;
  std::size_t max_body = 0;
  std::size_t job = 0;        ///< the event's index in the batch (0 for a whole-batch request)
  bool repeated = false;      ///< sent again after a 401 with a refreshed token
  std::uint64_t token_generation = 0;
  bool active = false;
  char error[CURL_ERROR_SIZE] = {};

  static std::size_t on_body(char* data, std::size_t size, std::size_t count, void* self) {
    auto* t = static_cast<transfer*>(self);
    const std::size_t bytes = size * count;
    const std::size_t room = t->max_body - std::min(t->max_body, t->response.body.size());
    t->response.body.append(data, std::min(bytes, room));
    return bytes;  // the rest is read and dropped, not an error
  }

  static std::size_t on_header(char* data, std::size_t size, std::size_t count, void* self) {
    auto* t = static_cast<transfer*>(self);
    const std::size_t bytes = size * count;
    std::string_view line(data, bytes);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
    if (line.starts_with("HTTP/")) {
      t->response.headers.clear();  // a new response begins (after a 100 Continue, say)
      return bytes;
    }
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) return bytes;
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    t->response.headers.emplace_back(std::string(line.substr(0, colon)), std::string(value));
    return bytes;
  }
};

/// "Name: value" with line breaks replaced, so no value can smuggle in a header of its own.
inline std::string header_line(std::string_view name, std::string_view value) {
  std::string line;
  line.reserve(name.size() + value.size() + 2);
  line.append(name).append(": ").append(value);
  std::replace_if(line.begin(), line.end(), [](char c) { return c == '\r' || c == '\n'; }, ' ');
  return line;
}

inline long curl_http_version(http_version v) noexcept {
  switch (v) {
    case http_version::http1_1: return CURL_HTTP_VERSION_1_1;
    case http_version::http2_tls: return CURL_HTTP_VERSION_2TLS;
    case http_version::http2_prior_knowledge: return CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE;
  }
  return CURL_HTTP_VERSION_1_1;
}

inline long milliseconds(duration d) noexcept {
  return static_cast<long>(std::max<std::chrono::milliseconds::rep>(
      1, std::chrono::duration_cast<std::chrono::milliseconds>(d).count()));
}

/// The base URL checked and without its trailing slashes, or why it cannot be one.
inline result<std::string> checked_base_url(const std::string& text) {
  const auto invalid = [&](std::string why) {
    return error(errc::invalid_argument, "outbox::http_transport: base_url \"" + text + "\" " + std::move(why));
  };
  url_handle url(curl_url());
  if (!url) return error(errc::io_error, "outbox::http_transport: libcurl could not allocate a URL");
  if (const CURLUcode rc = curl_url_set(url.get(), CURLUPART_URL, text.c_str(), 0); rc != CURLUE_OK)
    return invalid(std::string("does not parse: ") + curl_url_strerror(rc));
  {
    curl_string scheme;
    if (curl_url_get(url.get(), CURLUPART_SCHEME, &scheme.text, 0) != CURLUE_OK ||
        (std::string_view(scheme.text) != "http" && std::string_view(scheme.text) != "https"))
      return invalid("must start with http:// or https://");
  }
  {
    curl_string host;
    if (curl_url_get(url.get(), CURLUPART_HOST, &host.text, 0) != CURLUE_OK || *host.text == '\0')
      return invalid("names no host");
  }
  for (const CURLUPart part : {CURLUPART_QUERY, CURLUPART_FRAGMENT}) {
    curl_string rest;
    if (curl_url_get(url.get(), part, &rest.text, 0) == CURLUE_OK)
      return invalid("must not have a query or fragment: routes are appended to it");
  }
  std::string base = text;
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base;
}

}  // namespace detail::http

/// An `outbox::transport` (and `outbox::error_reporting_transport`) over HTTP. Movable. One
/// `send` at a time, as the outbox calls it.
class http_transport {
 public:
  /// Checks the options and sets up libcurl. Returns a typed error instead of throwing:
  /// invalid_argument (a malformed base_url, max_in_flight 0, a timeout that is not positive),
  /// io_error (libcurl could not start).
  [[nodiscard]] static result<http_transport> make(http_options options) {
    if (!detail::http::curl_ready()) return error(errc::io_error, "outbox::http_transport: curl_global_init failed");
    auto base = detail::http::checked_base_url(options.base_url);
    if (!base) return base.error();
    if (options.max_in_flight == 0)
      return error(errc::invalid_argument, "outbox::http_transport: max_in_flight must be at least 1");
    if (options.connect_timeout <= duration::zero() || options.timeout <= duration::zero())
      return error(errc::invalid_argument, "outbox::http_transport: connect_timeout and timeout must be positive");
    auto s = std::make_unique<state>();
    s->multi.reset(curl_multi_init());
    if (!s->multi) return error(errc::io_error, "outbox::http_transport: curl_multi_init failed");
    const long connections = static_cast<long>(std::min<std::size_t>(options.max_in_flight, 1024));
    curl_multi_setopt(s->multi.get(), CURLMOPT_MAX_HOST_CONNECTIONS, connections);
    curl_multi_setopt(s->multi.get(), CURLMOPT_MAXCONNECTS, connections);  // kept alive between batches
    curl_multi_setopt(s->multi.get(), CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    s->base = std::move(*base);
    s->options = std::move(options);
    return http_transport(std::move(s));
  }

  /// Throws `outbox::exception` with the error `make` returns.
  explicit http_transport(http_options options) : http_transport(make(std::move(options)).value()) {}

  http_transport(http_transport&&) noexcept = default;
  http_transport& operator=(http_transport&&) noexcept = default;
  ~http_transport() = default;

  [[nodiscard]] const http_options& options() const noexcept { return s_->options; }

  /// Where a 401 that a refreshed token did not cure is reported; the outbox sets it to its
  /// `on_error` when it is built.
  void set_error_reporter(std::function<void(const error&)> reporter) { s_->reporter = std::move(reporter); }

  /// Delivers the batch and writes one result per event. Never throws: a failure of the
  /// transport itself (memory, a user callable that threw) becomes a retryable result.
  void send(std::span<const event> batch, std::span<delivery_result> results) noexcept {
    if (batch.empty()) return;
    try {
      s_->run(batch, results);
    } catch (...) {
      try {
        s_->abandon(results, "outbox::http_transport: " + detail::describe(std::current_exception()));
      } catch (...) {
        s_->abandon_quietly();  // the results keep the outbox's pre-filled "retryable"
      }
    }
  }

 private:
  using transfer = detail::http::transfer;

  struct state {
    http_options options;
    std::string base;
    detail::http::multi_handle multi;
    std::vector<std::unique_ptr<transfer>> pool;
    std::function<void(const error&)> reporter;
    std::uint64_t token_generation = 0;
    std::string refreshed_token;

    // Per send.
    std::span<const event> batch;
    std::span<delivery_result> results;
    std::vector<char> answered;
    std::deque<std::pair<std::size_t, bool>> jobs;  // (job, repeated)
    std::size_t active = 0;
    bool unauthorized_reported = false;
    std::string url;  // scratch for the request being started

    void run(std::span<const event> b, std::span<delivery_result> r) {
      batch = b;
      results = r;
      const std::size_t job_count = options.batch ? 1 : batch.size();
      answered.assign(batch.size(), 0);
      jobs.clear();
      for (std::size_t i = 0; i < job_count; ++i) jobs.emplace_back(i, false);
      unauthorized_reported = false;
      refreshed_token.clear();
      start_jobs();
      while (active > 0) {
        int running = 0;
        curl_multi_perform(multi.get(), &running);
        int queued = 0;
        bool finished = false;
        while (CURLMsg* msg = curl_multi_info_read(multi.get(), &queued)) {
          if (msg->msg != CURLMSG_DONE) continue;
          finish(msg->easy_handle, msg->data.result);
          finished = true;
        }
        if (finished) start_jobs();
        if (active > 0 && !finished) curl_multi_poll(multi.get(), nullptr, 0, 1000, nullptr);
      }
    }

    void start_jobs() {
      while (!jobs.empty() && active < options.max_in_flight) {
        const auto [job, repeated] = jobs.front();
        jobs.pop_front();
        start(job, repeated);
      }
    }

    transfer* idle_transfer() {
      for (auto& t : pool)
        if (!t->active) return t.get();
      auto t = std::make_unique<transfer>();
      t->easy.reset(curl_easy_init());
      if (!t->easy) return nullptr;
      // What every request of this handle shares is set once; start() sets the rest.
      CURL* h = t->easy.get();
      curl_easy_setopt(h, CURLOPT_POST, 1L);
      curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &transfer::on_body);
      curl_easy_setopt(h, CURLOPT_WRITEDATA, t.get());
      curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &transfer::on_header);
      curl_easy_setopt(h, CURLOPT_HEADERDATA, t.get());
      curl_easy_setopt(h, CURLOPT_PRIVATE, t.get());
      curl_easy_setopt(h, CURLOPT_ERRORBUFFER, t->error);
      curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
      curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
      curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, detail::http::milliseconds(options.connect_timeout));
      curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, detail::http::milliseconds(options.timeout));
      curl_easy_setopt(h, CURLOPT_HTTP_VERSION, detail::http::curl_http_version(options.version));
      curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, options.verify_tls ? 1L : 0L);
      curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, options.verify_tls ? 2L : 0L);
      if (!options.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, options.ca_file.c_str());
      pool.push_back(std::move(t));
      return pool.back().get();
    }

    void start(std::size_t job, bool repeated) {
      transfer* t = idle_transfer();
      if (t == nullptr) return answer(job, delivery_result::retryable("outbox::http_transport: curl_easy_init failed"));
      try {
        t->request = options.batch ? batch_request()
                     : options.request ? options.request(batch[job], options)
                                       : default_http_request(batch[job], options);
      } catch (...) {
        return answer(job, delivery_result::retryable("outbox::http_transport: building the request threw: " +
                                                      detail::describe(std::current_exception())));
      }
      t->job = job;
      t->repeated = repeated;
      t->token_generation = token_generation;
      t->response.status = 0;
      t->response.body.clear();  // keeps its capacity for the next answer
      t->response.headers.clear();
      t->max_body = options.max_body_bytes;
      t->error[0] = '\0';
      t->headers.clear();
      bool listed = t->headers.append(detail::http::header_line("Content-Type", options.content_type)) &&
                    t->headers.append("Expect:");  // no 100-continue round trip before large bodies
      for (const auto& [name, value] : t->request.headers) listed = listed && t->headers.append(detail::http::header_line(name, value));
      if (options.token) {
        const std::string token = repeated ? refreshed_token : options.token(false);
        if (!token.empty()) listed = listed && t->headers.append(detail::http::header_line("Authorization", "Bearer " + token));
      }
      if (!listed) return answer(job, delivery_result::retryable("outbox::http_transport: out of memory for headers"));

      CURL* h = t->easy.get();
      url.assign(base);
      if (!t->request.path.empty() && t->request.path.front() != '/') url += '/';
      url += t->request.path;
      curl_easy_setopt(h, CURLOPT_URL, url.c_str());  // libcurl copies strings it is given
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, t->request.body.data());
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(t->request.body.size()));
      curl_easy_setopt(h, CURLOPT_HTTPHEADER, t->headers.get());
      if (const CURLMcode rc = curl_multi_add_handle(multi.get(), h); rc != CURLM_OK)
        return answer(job, delivery_result::retryable(std::string("outbox::http_transport: ") + curl_multi_strerror(rc)));
      t->active = true;
      ++active;
    }

    http_request batch_request() {
      http_request r;
      r.path = options.batch_route;
      r.body = options.batch_body ? options.batch_body(batch) : default_http_batch_body(batch);
      r.headers = options.headers;
      return r;
    }

    void finish(CURL* h, CURLcode code) {
      char* owner = nullptr;
      curl_easy_getinfo(h, CURLINFO_PRIVATE, &owner);
      auto* t = reinterpret_cast<transfer*>(owner);
      curl_multi_remove_handle(multi.get(), h);
      t->active = false;
      --active;
      if (code != CURLE_OK) {
        curl_off_t sent = 0;
        curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &sent);
        return answer(t->job, detail::http::transfer_failure(code, sent > 0, t->error));
      }
      curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &t->response.status);
      if (t->response.status == 401 && options.token) return unauthorized(*t);
      if (options.batch) return answer_batch(t->response);
      const event& e = batch[t->job];
      try {
        if (options.answer) return answer(t->job, options.answer(e, t->response));
        std::string remote;
        if (t->response.status >= 200 && t->response.status < 300)
          remote = options.remote_id ? options.remote_id(t->response) : std::string(t->response.header("Location"));
        answer(t->job, default_http_answer(t->response, std::move(remote), options.error_body_bytes));
      } catch (...) {
        answer(t->job, delivery_result::retryable("outbox::http_transport: mapping the answer threw: " +
                                                  detail::describe(std::current_exception())));
      }
    }

    void answer_batch(const http_response& r) {
      try {
        if (options.batch_answer) options.batch_answer(batch, r, results);
        else default_http_batch_answer(batch, r, results, options.error_body_bytes);
        std::fill(answered.begin(), answered.end(), 1);
      } catch (...) {
        answer(0, delivery_result::retryable("outbox::http_transport: mapping the batch answer threw: " +
                                             detail::describe(std::current_exception())));
      }
    }

    /// A 401: refresh the token once (once for all requests that went out with the old one)
    /// and send again; a 401 to the refreshed token means the user must log in again.
    void unauthorized(const transfer& t) {
      if (!t.repeated) {
        if (t.token_generation == token_generation) {
          refreshed_token = options.token(true);
          ++token_generation;
        }
        if (!refreshed_token.empty()) {
          jobs.emplace_front(t.job, true);
          return;
        }
      }
      if (!unauthorized_reported && reporter) {
        unauthorized_reported = true;
        reporter(error(errc::unauthorized, "outbox::http_transport: " + base +
                                               " answered 401 to a refreshed token; delivery waits for a new login"));
      }
      answer(t.job, delivery_result::unavailable("HTTP 401: the backend refused the refreshed token"));
    }

    /// The result of one job: one event, or every event of a whole-batch request.
    void answer(std::size_t job, const delivery_result& r) {
      if (!options.batch) {
        results[job] = r;
        answered[job] = 1;
        return;
      }
      std::fill(results.begin(), results.end(), r);
      std::fill(answered.begin(), answered.end(), 1);
    }

    /// After a failure of the transport itself: nothing stays in flight; events without an
    /// answer are retryable with `why`.
    void abandon(std::span<delivery_result> r, const std::string& why) {
      abandon_quietly();
      for (std::size_t i = 0; i < r.size(); ++i)
        if (i >= answered.size() || !answered[i]) r[i] = delivery_result::retryable(why);
    }

    void abandon_quietly() noexcept {
      for (auto& t : pool) {
        if (!t->active) continue;
        curl_multi_remove_handle(multi.get(), t->easy.get());
        t->active = false;
      }
      active = 0;
      jobs.clear();
    }
  };

  explicit http_transport(std::unique_ptr<state> s) : s_(std::move(s)) {}

  std::unique_ptr<state> s_;
};

}  // namespace outbox
