#pragma once
/// \file
/// What an HTTP answer, or a request that got none, means for an event: the default mapping of
/// `outbox::http_transport` onto delivered / retryable / permanent / unavailable.

#include <curl/curl.h>

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include "outbox/clock.hpp"
#include "outbox/event.hpp"
#include "outbox/transport/http/options.hpp"
#include "outbox/transport/http/retry_after.hpp"

namespace outbox {

/// A `remote_id` option taking the value of the header `name` ("Location", "X-Resource-Id").
[[nodiscard]] inline std::function<std::string(const http_response&)> remote_id_from_header(std::string name) {
  return [name = std::move(name)](const http_response& r) { return std::string(r.header(name)); };
}

/// A `remote_id` option that reads the id from the body with `read` (a JSON library's lookup).
[[nodiscard]] inline std::function<std::string(const http_response&)> remote_id_from_body(
    std::function<std::string(std::string_view body)> read) {
  return [read = std::move(read)](const http_response& r) { return read(r.body); };
}

/// Statuses that say "not now" rather than "never": the request may succeed later unchanged.
[[nodiscard]] constexpr bool is_retryable_http_status(long status) noexcept {
  switch (status) {
    case 408: case 425: case 429: case 500: case 502: case 503: case 504: return true;
    default: return false;
  }
}

/// The default mapping of an answer: 2xx delivered with `remote_id`; 408, 425, 429, 500, 502,
/// 503, 504 retryable with the `Retry-After` hint (delta-seconds or HTTP-date, measured from the
/// answer's `Date` or else `now`; the outbox bounds it by the backoff's cap); anything else
/// (other 4xx, other 5xx, a 3xx: redirects are not followed) permanent. Failures carry
/// "HTTP <status>: <the first `error_body_bytes` of the body>".
[[nodiscard]] inline delivery_result default_http_answer(const http_response& r, std::string remote_id = {},
                                                         std::size_t error_body_bytes = 200,
                                                         timestamp now = std::chrono::system_clock::now()) {
  if (r.status >= 200 && r.status < 300) return delivery_result::delivered(std::move(remote_id));
  std::string why = "HTTP " + std::to_string(r.status);
  if (!r.body.empty() && error_body_bytes > 0) {
    why += ": ";
    why.append(r.body, 0, error_body_bytes);
  }
  if (is_retryable_http_status(r.status))
    return delivery_result::retryable(std::move(why),
                                      detail::http::parse_retry_after(r.header("Retry-After"), r.header("Date"), now));
  return delivery_result::permanent(std::move(why));
}

namespace detail::http {

/// A request that got no answer. Failures before anything was sent (no route to the server:
/// refused, DNS, proxy, connect timeout, TLS handshake or certificate) are `unavailable`: the
/// server cannot have the event, and being offline must not burn attempts. Failures after the
/// request went out (a timeout, a connection dropped mid-answer) are `retryable`: the server may
/// have it, and the idempotency key makes the repeat harmless.
inline delivery_result transfer_failure(CURLcode code, bool request_sent, const char* detail) {
  std::string why = "HTTP request failed: ";
  why += curl_easy_strerror(code);
  if (detail != nullptr && *detail != '\0') {
    why += " (";
    why += detail;
    why += ')';
  }
  switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_CRL_BADFILE:
      return delivery_result::unavailable(std::move(why));
    case CURLE_OPERATION_TIMEDOUT:
      if (!request_sent) return delivery_result::unavailable(std::move(why));
      return delivery_result::retryable(std::move(why));
    default:
      // A request that may have gone out, or a failure of our own (memory): try again later.
      return delivery_result::retryable(std::move(why));
  }
}

}  // namespace detail::http
}  // namespace outbox
