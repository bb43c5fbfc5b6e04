#pragma once
/// \file
/// `outbox::event_id`: a 128-bit, time-ordered identifier in the UUID version 7 layout
/// (RFC 9562). Ids made by one generator sort in creation order, which keeps B-tree indexes
/// append-only; the printed form is the usual 8-4-4-4-12 hex.

#include <array>
#include <compare>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>

#include "outbox/clock.hpp"

namespace outbox {

/// A 128-bit event id; the all-zero id is "nil". Compares and hashes by value.
struct event_id {
  std::uint64_t high = 0;  ///< unix milliseconds (48 bits), version (4), counter (12)
  std::uint64_t low = 0;   ///< variant (2), random (62)

  [[nodiscard]] constexpr bool is_nil() const noexcept { return high == 0 && low == 0; }
  friend constexpr auto operator<=>(const event_id&, const event_id&) = default;

  /// The Unix millisecond the id was made at.
  [[nodiscard]] constexpr std::uint64_t unix_millis() const noexcept { return high >> 16; }

  /// "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".
  [[nodiscard]] std::string to_string() const {
    static constexpr char digits[] = "0123456789abcdef";
    std::string text(36, '-');
    std::size_t pos = 0;
    for (int nibble = 0; nibble < 32; ++nibble) {
      if (pos == 8 || pos == 13 || pos == 18 || pos == 23) ++pos;
      const std::uint64_t word = nibble < 16 ? high : low;
      const int shift = 60 - 4 * (nibble % 16);
      text[pos++] = digits[(word >> shift) & 0xF];
    }
    return text;
  }

  /// Parses the 36-character form (either case); nullopt for anything else.
  [[nodiscard]] static std::optional<event_id> parse(std::string_view text) noexcept {
    if (text.size() != 36) return std::nullopt;
    event_id id;
    int nibble = 0;
    for (std::size_t pos = 0; pos < 36; ++pos) {
      const char c = text[pos];
      if (pos == 8 || pos == 13 || pos == 18 || pos == 23) {
        if (c != '-') return std::nullopt;
        continue;
      }
      std::uint64_t value = 0;
      if (c >= '0' && c <= '9') value = static_cast<std::uint64_t>(c - '0');
      else if (c >= 'a' && c <= 'f') value = static_cast<std::uint64_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') value = static_cast<std::uint64_t>(c - 'A' + 10);
      else return std::nullopt;
      std::uint64_t& word = nibble < 16 ? id.high : id.low;
      word = (word << 4) | value;
      ++nibble;
    }
    return id;
  }
};

/// Makes UUID-v7 ids that strictly increase, even within one millisecond and even when the
/// clock steps backwards (the generator then keeps counting from the last millisecond it used).
/// Thread-safe.
class event_id_generator {
 public:
  event_id_generator() : random_(std::random_device{}()) {}
  explicit event_id_generator(std::uint64_t seed) : random_(seed) {}

  [[nodiscard]] event_id next(timestamp now) {
    event_id id;
    next(now, std::span<event_id>(&id, 1));
    return id;
  }

  /// Fills `out` with what `next(now)` would give for each in turn, under one lock: a batch's
  /// ids cost one lock, not one each.
  void next(timestamp now, std::span<event_id> out) {
    const auto millis = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count());
    std::lock_guard lock(mutex_);
    for (event_id& id : out) id = next_locked(millis);
  }

 private:
  event_id next_locked(std::uint64_t millis) {
    if (millis > last_millis_) {
      last_millis_ = millis;
      // Start each millisecond's 12-bit counter in its lower half so it can count up.
      counter_ = random_() & 0x7FF;
    } else if (++counter_ > 0xFFF) {
      ++last_millis_;  // counter exhausted: borrow the next millisecond, stay monotonic
      counter_ = 0;
    }
    event_id id;
    id.high = ((last_millis_ & 0xFFFF'FFFF'FFFF) << 16) | (0x7ULL << 12) | counter_;
    id.low = (0b10ULL << 62) | (random_() & 0x3FFF'FFFF'FFFF'FFFF);
    return id;
  }

  std::mutex mutex_;
  std::mt19937_64 random_;
  std::uint64_t last_millis_ = 0;
  std::uint64_t counter_ = 0;
};

}  // namespace outbox

template <>
struct std::hash<outbox::event_id> {
  std::size_t operator()(const outbox::event_id& id) const noexcept {
    // The low word is 62 random bits already; fold the high word in for the nil-random case.
    return static_cast<std::size_t>(id.low ^ (id.high * 0x9E3779B97F4A7C15ULL));
  }
};
