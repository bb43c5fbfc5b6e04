#pragma once
/// \file
/// What `outbox::http_transport` is configured with and what its customisation points see:
/// `http_options`, `http_request` (what is sent) and `http_response` (what came back).
///
/// The customisation points are option callables rather than template parameters: the request
/// builder, the answer mapper and the token provider are usually closures over run-time state
/// (a login, a base path read from settings), a call through `std::function` costs nothing next
/// to a network round trip, and `outbox::http_transport` stays one type to name in an
/// `Outbox<Storage, http_transport>`. Every one of them is optional: empty means the default.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "outbox/clock.hpp"
#include "outbox/event.hpp"

namespace outbox {

/// A header as a name and a value.
using http_header = std::pair<std::string, std::string>;

/// Which HTTP version to ask for.
enum class http_version : std::uint8_t {
  http1_1,                ///< HTTP/1.1 only
  http2_tls,              ///< HTTP/2 over TLS when the server offers it (ALPN), else HTTP/1.1
  http2_prior_knowledge,  ///< HTTP/2 from the first byte, also without TLS; the server must speak it
};

/// One request as it will be sent: `base_url` + `path`, a POST of `body` with `headers`.
struct http_request {
  std::string path{};                 ///< appended to the base URL ("/steps")
  std::string body{};
  std::vector<http_header> headers{};  ///< besides Content-Type and Authorization, which the transport adds
};

/// An answer as received.
struct http_response {
  long status = 0;
  std::string body{};                  ///< up to `http_options::max_body_bytes` of it
  std::vector<http_header> headers{};  ///< in the order received

  /// The value of the last header called `name` (compared without case), or empty.
  [[nodiscard]] std::string_view header(std::string_view name) const noexcept {
    for (auto it = headers.rbegin(); it != headers.rend(); ++it)
      if (same_name(it->first, name)) return it->second;
    return {};
  }

 private:
  static bool same_name(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
      if (lower(a[i]) != lower(b[i])) return false;
    }
    return true;
  }
};

/// Settings of `outbox::http_transport`. Only `base_url` is required.
struct http_options {
  /// "https://api.example.com/v1": scheme (http or https) and host required. Checked at
  /// construction: a URL that does not parse is an `errc::invalid_argument`.
  std::string base_url{};

  // ---- requests, one per event (the default) ---------------------------------------------------

  /// The path for an event, appended to `base_url`. Empty: `outbox::default_http_route`, the
  /// type without its last part, dots as slashes ("steps.hourly.created" -> "/steps/hourly").
  std::function<std::string(const event&)> route{};
  /// Sent with every request (an API version, a client name).
  std::vector<http_header> headers{};
  /// Adds the event's type, entity id and attempt number as `X-Outbox-Event-Type`,
  /// `X-Outbox-Entity-Id` and `X-Outbox-Attempt`.
  bool describe_event = true;
  std::string content_type = "application/json";
  /// Builds the whole request for an event instead (route, body and headers are then all its
  /// own; the transport still adds Content-Type and Authorization). Empty:
  /// `outbox::default_http_request`: route, payload as body, `Idempotency-Key: <event id>`,
  /// `headers`, and the event's description.
  std::function<http_request(const event&, const http_options&)> request{};

  // ---- answers -----------------------------------------------------------------------------------

  /// The backend's id for what a 2xx created. Empty: the `Location` header's value (see
  /// `outbox::remote_id_from_header`, `outbox::remote_id_from_body`).
  std::function<std::string(const http_response&)> remote_id{};
  /// Maps an answer to the event's result instead of `outbox::default_http_answer` (2xx
  /// delivered; 408, 425, 429, 500, 502, 503, 504 retryable with the Retry-After hint; other
  /// statuses permanent, with the status and the start of the body). A 401 is handled before
  /// this is called when there is a `token` provider.
  std::function<delivery_result(const event&, const http_response&)> answer{};
  /// How much of an error answer's body goes into the event's last error.
  std::size_t error_body_bytes = 200;
  /// Longer bodies are cut here (what `remote_id` and `answer` see).
  std::size_t max_body_bytes = std::size_t{1} << 20;

  // ---- batch mode: one POST for the whole batch ------------------------------------------------

  /// Sends each batch as one request to `batch_route` instead of one per event.
  bool batch = false;
  std::string batch_route = "/events";
  /// The batch's body. Empty: `outbox::default_http_batch_body`, a JSON array of
  /// {"id","type","entity_id","attempt","payload"} objects (see <outbox/transport/http/batch.hpp>).
  /// A batch request carries no Idempotency-Key header (its events may differ on a retry); each
  /// item carries its id.
  std::function<std::string(std::span<const event>)> batch_body{};
  /// Writes one result per event from the batch's answer. Empty: `outbox::default_http_batch_answer`:
  /// a 2xx whose body is an array of {"id","status","remote_id","error","retry_after"} objects
  /// gives each event the result of its own status; another 2xx delivers every event; any other
  /// status counts for every event.
  std::function<void(std::span<const event>, const http_response&, std::span<delivery_result>)> batch_answer{};

  // ---- auth --------------------------------------------------------------------------------------

  /// Gives the bearer token for each request (`refresh` false) and a fresh one after a 401
  /// (`refresh` true); empty string: send no Authorization header. After a 401 the request is
  /// repeated once with the refreshed token; a second 401 answers `unavailable` (no attempt used
  /// while the user logs in again) and is reported as `errc::unauthorized` to the outbox's
  /// `on_error`. Called on the processing thread. Empty: no token, and a 401 is permanent like
  /// other 4xx.
  std::function<std::string(bool refresh)> token{};

  // ---- the connection ----------------------------------------------------------------------------

  /// Requests of one batch in flight together (events of one batch have distinct ordering keys,
  /// so this never reorders a key). At least 1.
  std::size_t max_in_flight = 8;
  http_version version = http_version::http2_tls;
  duration connect_timeout = std::chrono::seconds(10);  ///< to reach the server: unavailable after it
  duration timeout = std::chrono::seconds(30);          ///< for the whole request: retryable after it
  bool verify_tls = true;                               ///< the peer's certificate and name
  std::string ca_file{};                                ///< trusted CAs (PEM) instead of the system's
  // Proxies: libcurl's environment variables (https_proxy, no_proxy, ...) apply as usual.
};

}  // namespace outbox
