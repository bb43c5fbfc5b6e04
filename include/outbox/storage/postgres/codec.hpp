#pragma once
/// \file
/// Values to and from PostgreSQL's text format: every value the storage sends is a bound
/// parameter in this form (never part of the SQL), and every column it reads is parsed here.
/// Batches travel as one array parameter per column (`{...}` literals) that the SQL unnests.

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "outbox/clock.hpp"
#include "outbox/event_id.hpp"

namespace outbox::detail::postgres {

/// A parameter: text, or NULL.
using param = std::optional<std::string>;

[[nodiscard]] inline std::string text_of(std::int64_t v) { return std::to_string(v); }
[[nodiscard]] inline std::string text_of(timestamp t) { return std::to_string(to_micros(t)); }
[[nodiscard]] inline std::string text_of(const event_id& id) { return id.to_string(); }

/// bytea in hex form: \x0a1b...
[[nodiscard]] inline std::string bytea_of(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 + bytes.size() * 2);
  out += "\\x";
  for (const char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    out += digits[b >> 4];
    out += digits[b & 0xF];
  }
  return out;
}

[[nodiscard]] inline int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return 0;
}

/// A bytea column in hex form back to its bytes.
[[nodiscard]] inline std::string bytes_of(std::string_view text) {
  if (text.size() < 2 || text[0] != '\\' || text[1] != 'x') return std::string(text);
  std::string out;
  out.reserve((text.size() - 2) / 2);
  for (std::size_t i = 2; i + 1 < text.size(); i += 2)
    out += static_cast<char>(hex_value(text[i]) << 4 | hex_value(text[i + 1]));
  return out;
}

[[nodiscard]] inline std::int64_t int_of(const char* text) noexcept { return std::strtoll(text, nullptr, 10); }
[[nodiscard]] inline timestamp time_of(const char* text) noexcept { return from_micros(int_of(text)); }
[[nodiscard]] inline event_id id_of(const char* text) noexcept {
  return event_id::parse(text).value_or(event_id{});
}

/// An array literal built one element at a time: `{"a","b\"c"}`. Every element is quoted, so
/// any text is safe in it (NUL aside, which PostgreSQL text cannot hold).
class array_literal {
 public:
  array_literal() { text_ += '{'; }
  array_literal& add(std::string_view element) {
    if (text_.size() > 1) text_ += ',';
    text_ += '"';
    for (const char c : element) {
      if (c == '"' || c == '\\') text_ += '\\';
      text_ += c;
    }
    text_ += '"';
    return *this;
  }
  array_literal& add(std::int64_t v) { return add(std::string_view(text_of(v))); }
  array_literal& add(timestamp t) { return add(std::string_view(text_of(t))); }
  array_literal& add(const event_id& id) { return add(std::string_view(text_of(id))); }
  array_literal& add_bytea(std::string_view bytes) { return add(std::string_view(bytea_of(bytes))); }
  [[nodiscard]] std::string str() && {
    text_ += '}';
    return std::move(text_);
  }

 private:
  std::string text_;
};

}  // namespace outbox::detail::postgres
