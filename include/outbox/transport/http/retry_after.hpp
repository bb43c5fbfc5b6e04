#pragma once
/// \file
/// `Retry-After` (RFC 9110 section 10.2.3) for `outbox::http_transport`: delta-seconds, or an
/// HTTP-date in any of its three forms (IMF-fixdate, RFC 850, asctime). Pure parsing, no libcurl.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include "outbox/clock.hpp"

namespace outbox::detail::http {

/// Reads the characters of an HTTP-date one field at a time.
class date_reader {
 public:
  explicit date_reader(std::string_view text) : text_(text) {}

  [[nodiscard]] bool done() const noexcept { return at_ == text_.size(); }

  bool skip(char c) {
    if (at_ < text_.size() && text_[at_] == c) {
      ++at_;
      return true;
    }
    return false;
  }
  void skip_spaces() {
    while (skip(' ')) {
    }
  }

  /// Letters up to the next non-letter.
  std::string_view word() {
    const std::size_t start = at_;
    while (at_ < text_.size() && ((text_[at_] >= 'A' && text_[at_] <= 'Z') || (text_[at_] >= 'a' && text_[at_] <= 'z')))
      ++at_;
    return text_.substr(start, at_ - start);
  }

  /// `min_digits` to `max_digits` decimal digits.
  std::optional<int> number(std::size_t min_digits, std::size_t max_digits) {
    int value = 0;
    std::size_t digits = 0;
    while (at_ < text_.size() && digits < max_digits && text_[at_] >= '0' && text_[at_] <= '9') {
      value = value * 10 + (text_[at_] - '0');
      ++at_;
      ++digits;
    }
    if (digits < min_digits) return std::nullopt;
    return value;
  }

 private:
  std::string_view text_;
  std::size_t at_ = 0;
};

/// 1-12 for "Jan".."Dec" (case-sensitive, as the grammar says), 0 otherwise.
inline unsigned month_number(std::string_view name) noexcept {
  constexpr std::string_view names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  for (unsigned i = 0; i < 12; ++i)
    if (names[i] == name) return i + 1;
  return 0;
}

/// "HH:MM:SS" as a time of day.
inline std::optional<std::chrono::seconds> read_time_of_day(date_reader& r) {
  const auto h = r.number(2, 2);
  if (!h || !r.skip(':')) return std::nullopt;
  const auto m = r.number(2, 2);
  if (!m || !r.skip(':')) return std::nullopt;
  const auto s = r.number(2, 2);
  if (!s || *h > 23 || *m > 59 || *s > 60) return std::nullopt;  // 60: a leap second
  return std::chrono::hours(*h) + std::chrono::minutes(*m) + std::chrono::seconds(*s);
}

inline std::optional<std::chrono::sys_seconds> make_date(int year, unsigned month, int day, std::chrono::seconds time) {
  const std::chrono::year_month_day date{std::chrono::year(year), std::chrono::month(month),
                                         std::chrono::day(static_cast<unsigned>(day))};
  if (!date.ok()) return std::nullopt;
  return std::chrono::sys_days(date) + time;
}

/// An HTTP-date as a point in UTC, or nothing if `text` is none of its three forms:
///
///     Sun, 06 Nov 1994 08:49:37 GMT     IMF-fixdate (what servers send)
///     Sunday, 06-Nov-94 08:49:37 GMT    RFC 850 (two-digit year: 70-99 -> 19xx, else 20xx)
///     Sun Nov  6 08:49:37 1994          asctime
inline std::optional<std::chrono::sys_seconds> parse_http_date(std::string_view text) {
  date_reader r(text);
  if (r.word().empty()) return std::nullopt;  // the day name, not checked against the date
  if (r.skip(',')) {
    r.skip_spaces();
    const auto day = r.number(2, 2);
    if (!day) return std::nullopt;
    const bool rfc850 = r.skip('-');
    if (!rfc850 && !r.skip(' ')) return std::nullopt;
    const unsigned month = month_number(r.word());
    if (month == 0 || !r.skip(rfc850 ? '-' : ' ')) return std::nullopt;
    auto year = rfc850 ? r.number(2, 2) : r.number(4, 4);
    if (!year || !r.skip(' ')) return std::nullopt;
    if (rfc850) *year += *year >= 70 ? 1900 : 2000;
    const auto time = read_time_of_day(r);
    if (!time || !r.skip(' ') || r.word() != "GMT") return std::nullopt;
    r.skip_spaces();
    if (!r.done()) return std::nullopt;
    return make_date(*year, month, *day, *time);
  }
  if (!r.skip(' ')) return std::nullopt;
  const unsigned month = month_number(r.word());
  if (month == 0 || !r.skip(' ')) return std::nullopt;
  r.skip(' ');  // a one-digit day is padded with a space
  const auto day = r.number(1, 2);
  if (!day || !r.skip(' ')) return std::nullopt;
  const auto time = read_time_of_day(r);
  if (!time || !r.skip(' ')) return std::nullopt;
  const auto year = r.number(4, 4);
  r.skip_spaces();
  if (!year || !r.done()) return std::nullopt;
  return make_date(*year, month, *day, *time);
}

/// How long a `Retry-After` value asks to wait, or nothing if it is neither form. A date is
/// measured from the response's `Date` header when it has a valid one (the server's own clock,
/// so a client clock that is off does not matter), else from `now`; a date in the past means
/// no wait. The outbox bounds the result by its backoff's cap.
inline std::optional<duration> parse_retry_after(std::string_view value, std::string_view date_header,
                                                 timestamp now) {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (value.empty()) return std::nullopt;
  if (value.front() >= '0' && value.front() <= '9') {
    std::int64_t seconds = 0;
    for (const char c : value) {
      if (c < '0' || c > '9') return std::nullopt;
      // Beyond ~30 years any hint is capped anyway; stop before the arithmetic could overflow.
      if (seconds < 1'000'000'000) seconds = seconds * 10 + (c - '0');
    }
    return std::chrono::duration_cast<duration>(std::chrono::seconds(seconds));
  }
  const auto until = parse_http_date(value);
  if (!until) return std::nullopt;
  const auto server_now = parse_http_date(date_header);
  const timestamp from = server_now ? timestamp(std::chrono::duration_cast<duration>(server_now->time_since_epoch())) : now;
  const timestamp at(std::chrono::duration_cast<duration>(until->time_since_epoch()));
  return at > from ? at - from : duration::zero();
}

}  // namespace outbox::detail::http
