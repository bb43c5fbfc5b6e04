#pragma once
/// \file
/// How `outbox::http_transport` builds its requests by default: the route from the event type
/// and the per-event request. Each is what an empty `http_options` member stands for, and
/// callable from a user's own builder. No libcurl here.

#include <string>
#include <string_view>

#include "outbox/event.hpp"
#include "outbox/transport/http/options.hpp"

namespace outbox {

namespace detail::http {

/// `text` with every byte outside RFC 3986's unreserved set percent-encoded.
inline void append_percent_encoded(std::string& out, std::string_view text) {
  constexpr char hex[] = "0123456789ABCDEF";
  for (const char c : text) {
    const bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                            c == '-' || c == '_' || c == '.' || c == '~';
    if (unreserved) {
      out += c;
    } else {
      const auto byte = static_cast<unsigned char>(c);
      out += '%';
      out += hex[byte >> 4];
      out += hex[byte & 0xF];
    }
  }
}

/// `text` as a JSON string literal, quotes included.
inline void append_json_string(std::string& out, std::string_view text) {
  constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += "\\u00";
          out += hex[static_cast<unsigned char>(c) >> 4];
          out += hex[static_cast<unsigned char>(c) & 0xF];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

}  // namespace detail::http

/// The default route: the event type without its last part (the verb), each remaining part a
/// percent-encoded path segment: "steps.hourly.created" -> "/steps/hourly", "weight.saved" ->
/// "/weight"; a type without a dot is one segment ("ping" -> "/ping").
[[nodiscard]] inline std::string default_http_route(const event& e) {
  std::string_view type = e.type;
  if (const auto last = type.rfind('.'); last != std::string_view::npos && last > 0) type = type.substr(0, last);
  std::string path;
  while (true) {
    const auto dot = type.find('.');
    path += '/';
    detail::http::append_percent_encoded(path, type.substr(0, dot));
    if (dot == std::string_view::npos) break;
    type.remove_prefix(dot + 1);
  }
  return path;
}

/// The default request for one event: `options.route` (or the default route), the payload as
/// body, `Idempotency-Key: <event id>` (the same on every retry), `options.headers`, and with
/// `options.describe_event` the event's type, entity id and attempt number.
[[nodiscard]] inline http_request default_http_request(const event& e, const http_options& options) {
  http_request r;
  r.path = options.route ? options.route(e) : default_http_route(e);
  r.body = e.payload;
  r.headers.reserve(options.headers.size() + 4);
  r.headers.emplace_back("Idempotency-Key", e.id.to_string());
  if (options.describe_event) {
    r.headers.emplace_back("X-Outbox-Event-Type", e.type);
    r.headers.emplace_back("X-Outbox-Entity-Id", e.entity_id);
    r.headers.emplace_back("X-Outbox-Attempt", std::to_string(e.attempts));
  }
  r.headers.insert(r.headers.end(), options.headers.begin(), options.headers.end());
  return r;
}

}  // namespace outbox
