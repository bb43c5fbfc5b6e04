#pragma once
/// \file
/// The default format of `outbox::http_transport`'s batch mode (`http_options::batch`): the body
/// of one POST carrying the whole batch, and how its answer gives one result per event.
///
/// Request, a JSON array in batch order (the payload inserted as it is, so it must be JSON; an
/// empty payload becomes null):
///
///     [{"id":"0190...","type":"steps.saved","entity_id":"steps-1","attempt":1,"payload":{...}}, ...]
///
/// Answer:
///   - not 2xx: that status counts for every event (mapped as `default_http_answer` maps it);
///   - 2xx whose body is a JSON array of objects: one object per event, found by "id", with
///     "status" (a number, mapped as an HTTP status) and optionally "remote_id", "error" and
///     "retry_after" (seconds). An event with no object is retryable;
///
///         [{"id":"0190...","status":201,"remote_id":"srv-7"},
///          {"id":"0191...","status":422,"error":"steps must not be negative"},
///          {"id":"0192...","status":503,"retry_after":30}]
///
///   - any other 2xx body (empty, an object): every event delivered, without remote ids.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "outbox/event.hpp"
#include "outbox/transport/http/answer.hpp"
#include "outbox/transport/http/options.hpp"
#include "outbox/transport/http/request.hpp"

namespace outbox {

namespace detail::http {

/// Just enough JSON to read an array of flat objects: strings, integers, and any other value
/// skipped. Every method returns false (or nothing) on input that is not JSON.
class json_reader {
 public:
  explicit json_reader(std::string_view text) : text_(text) {}

  void skip_space() {
    while (at_ < text_.size() && (text_[at_] == ' ' || text_[at_] == '\t' || text_[at_] == '\n' || text_[at_] == '\r'))
      ++at_;
  }
  [[nodiscard]] bool done() {
    skip_space();
    return at_ == text_.size();
  }
  [[nodiscard]] char peek() {
    skip_space();
    return at_ < text_.size() ? text_[at_] : '\0';
  }
  bool take(char c) {
    if (peek() != c) return false;
    ++at_;
    return true;
  }

  std::optional<std::string> string() {
    if (!take('"')) return std::nullopt;
    std::string out;
    while (at_ < text_.size()) {
      const char c = text_[at_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) return std::nullopt;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_ >= text_.size()) return std::nullopt;
      switch (const char e = text_[at_++]) {
        case '"': case '\\': case '/': out += e; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          auto code = hex4();
          if (!code) return std::nullopt;
          if (*code >= 0xD800 && *code < 0xDC00) {  // a surrogate pair
            if (at_ + 1 >= text_.size() || text_[at_] != '\\' || text_[at_ + 1] != 'u') return std::nullopt;
            at_ += 2;
            const auto low = hex4();
            if (!low || *low < 0xDC00 || *low >= 0xE000) return std::nullopt;
            code = 0x10000 + ((*code - 0xD800) << 10) + (*low - 0xDC00);
          }
          append_utf8(out, *code);
          break;
        }
        default: return std::nullopt;
      }
    }
    return std::nullopt;
  }

  /// An integer (a fraction or exponent is read and dropped).
  std::optional<std::int64_t> integer() {
    skip_space();
    const bool negative = at_ < text_.size() && text_[at_] == '-';
    if (negative) ++at_;
    std::int64_t value = 0;
    const std::size_t start = at_;
    while (at_ < text_.size() && text_[at_] >= '0' && text_[at_] <= '9') {
      if (value < 1'000'000'000'000) value = value * 10 + (text_[at_] - '0');
      ++at_;
    }
    if (at_ == start) return std::nullopt;
    if (at_ < text_.size() && text_[at_] == '.') {
      ++at_;
      while (at_ < text_.size() && text_[at_] >= '0' && text_[at_] <= '9') ++at_;
    }
    if (at_ < text_.size() && (text_[at_] == 'e' || text_[at_] == 'E')) {
      ++at_;
      if (at_ < text_.size() && (text_[at_] == '+' || text_[at_] == '-')) ++at_;
      while (at_ < text_.size() && text_[at_] >= '0' && text_[at_] <= '9') ++at_;
    }
    return negative ? -value : value;
  }

  /// Any value, unread.
  bool skip_value(int depth = 0) {
    if (depth > 64) return false;
    const char c = peek();
    if (c == '"') return string().has_value();
    if (c == '-' || (c >= '0' && c <= '9')) return integer().has_value();
    for (const std::string_view word : {"true", "false", "null"}) {
      if (text_.substr(at_, word.size()) == word) {
        at_ += word.size();
        return true;
      }
    }
    const bool object = c == '{';
    if (!object && c != '[') return false;
    ++at_;
    if (take(object ? '}' : ']')) return true;
    do {
      if (object && (!string() || !take(':'))) return false;
      if (!skip_value(depth + 1)) return false;
    } while (take(','));
    return take(object ? '}' : ']');
  }

 private:
  std::optional<std::uint32_t> hex4() {
    if (at_ + 4 > text_.size()) return std::nullopt;
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = text_[at_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= static_cast<std::uint32_t>(h - '0');
      else if (h >= 'a' && h <= 'f') v |= static_cast<std::uint32_t>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') v |= static_cast<std::uint32_t>(h - 'A' + 10);
      else return std::nullopt;
    }
    return v;
  }

  static void append_utf8(std::string& out, std::uint32_t c) {
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if (c < 0x800) {
      out += static_cast<char>(0xC0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      out += static_cast<char>(0xE0 | (c >> 12));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (c >> 18));
      out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    }
  }

  std::string_view text_;
  std::size_t at_ = 0;
};

/// One object of a batch answer.
struct batch_item {
  std::string id;
  std::optional<std::int64_t> status;
  std::string remote_id;
  std::string error;
  std::optional<std::int64_t> retry_after;
};

/// The objects of a batch answer's array, or nothing if the body is not such an array.
inline std::optional<std::map<std::string, batch_item>> read_batch_items(std::string_view body) {
  json_reader r(body);
  if (!r.take('[')) return std::nullopt;
  std::map<std::string, batch_item> items;
  if (r.take(']')) return r.done() ? std::optional(std::move(items)) : std::nullopt;
  do {
    if (!r.take('{')) return std::nullopt;
    batch_item item;
    if (!r.take('}')) {
      do {
        const auto key = r.string();
        if (!key || !r.take(':')) return std::nullopt;
        bool read = true;
        if (*key == "id" && r.peek() == '"') item.id = *r.string();
        else if (*key == "remote_id" && r.peek() == '"') item.remote_id = *r.string();
        else if (*key == "error" && r.peek() == '"') item.error = *r.string();
        else if (*key == "status") read = (item.status = r.integer()).has_value();
        else if (*key == "retry_after") read = (item.retry_after = r.integer()).has_value();
        else read = r.skip_value();
        if (!read) return std::nullopt;
      } while (r.take(','));
      if (!r.take('}')) return std::nullopt;
    }
    items[item.id] = std::move(item);
  } while (r.take(','));
  if (!r.take(']') || !r.done()) return std::nullopt;
  return items;
}

}  // namespace detail::http

/// The default batch body: see this file's description.
[[nodiscard]] inline std::string default_http_batch_body(std::span<const event> batch) {
  std::string body = "[";
  for (const event& e : batch) {
    if (body.size() > 1) body += ',';
    body += "{\"id\":";
    detail::http::append_json_string(body, e.id.to_string());
    body += ",\"type\":";
    detail::http::append_json_string(body, e.type);
    body += ",\"entity_id\":";
    detail::http::append_json_string(body, e.entity_id);
    body += ",\"attempt\":";
    body += std::to_string(e.attempts);
    body += ",\"payload\":";
    body += e.payload.empty() ? std::string_view("null") : std::string_view(e.payload);
    body += '}';
  }
  body += ']';
  return body;
}

/// The default batch answer: see this file's description.
inline void default_http_batch_answer(std::span<const event> batch, const http_response& r,
                                      std::span<delivery_result> results, std::size_t error_body_bytes = 200) {
  const std::size_t n = std::min(batch.size(), results.size());
  const bool success = r.status >= 200 && r.status < 300;
  const auto items = success ? detail::http::read_batch_items(r.body) : std::nullopt;
  if (!items) {
    const delivery_result one = default_http_answer(r, {}, error_body_bytes);
    for (std::size_t i = 0; i < n; ++i) results[i] = one;
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {
    const auto found = items->find(batch[i].id.to_string());
    if (found == items->end() || !found->second.status) {
      results[i] = delivery_result::retryable("HTTP " + std::to_string(r.status) +
                                              ": the batch answer has no status for this event");
      continue;
    }
    const detail::http::batch_item& item = found->second;
    // The item's status read as an answer of its own, so the one mapping applies.
    http_response one;
    one.status = static_cast<long>(*item.status);
    one.body = item.error;
    if (item.retry_after) one.headers.emplace_back("Retry-After", std::to_string(std::max<std::int64_t>(0, *item.retry_after)));
    results[i] = default_http_answer(one, item.remote_id, error_body_bytes);
  }
}

}  // namespace outbox
