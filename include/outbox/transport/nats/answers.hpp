#pragma once
/// \file
/// How `outbox::nats_transport` judges what it publishes and what JetStream answers: valid
/// subjects and header values, and the delivery result for each ack or failure. Internal
/// (`outbox::detail::nats`).

#include <cstddef>
#include <string>
#include <string_view>

#include <nats/nats.h>

#include "outbox/event.hpp"

namespace outbox::detail::nats {

/// A literal subject NATS accepts for publishing: dot-separated non-empty tokens, no
/// whitespace, no wildcard token.
[[nodiscard]] inline bool valid_subject(std::string_view subject) noexcept {
  if (subject.empty()) return false;
  std::size_t token_start = 0;
  for (std::size_t i = 0; i <= subject.size(); ++i) {
    if (i == subject.size() || subject[i] == '.') {
      const std::string_view token = subject.substr(token_start, i - token_start);
      if (token.empty() || token == "*" || token == ">") return false;
      token_start = i + 1;
      continue;
    }
    const char c = subject[i];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\0') return false;
  }
  return true;
}

[[nodiscard]] inline bool valid_header_value(std::string_view value) noexcept {
  return value.find_first_of("\r\n", 0) == std::string_view::npos && value.find('\0') == std::string_view::npos;
}

/// The answer for one publish ack (or its failure).
inline delivery_result answer(const jsPubAck* ack, const jsPubAckErr* failure) {
  if (ack != nullptr) {
    return delivery_result::delivered(std::string(ack->Stream != nullptr ? ack->Stream : "") + ":" +
                                      std::to_string(ack->Sequence));
  }
  if (failure == nullptr) return delivery_result::retryable("nats: publish failed without a reason");
  const std::string text = failure->ErrText != nullptr ? failure->ErrText : "unknown failure";
  if (failure->Err == NATS_NO_RESPONDERS)
    return delivery_result::retryable("nats: no JetStream stream captures this subject (no responders)");
  if (failure->ErrCode == JSStreamMessageExceedsMaximumErr)
    return delivery_result::permanent("nats: JetStream refused the message: " + text);
  if (failure->ErrCode != 0)
    return delivery_result::retryable("nats: JetStream error " + std::to_string(static_cast<int>(failure->ErrCode)) +
                                      ": " + text);
  return delivery_result::retryable("nats: " + text);
}

/// Publish failures that mean the broker cannot be reached now.
[[nodiscard]] inline bool is_connection_status(natsStatus s) noexcept {
  return s == NATS_CONNECTION_CLOSED || s == NATS_CONNECTION_DISCONNECTED || s == NATS_NOT_YET_CONNECTED ||
         s == NATS_NO_SERVER || s == NATS_STALE_CONNECTION || s == NATS_INSUFFICIENT_BUFFER || s == NATS_IO_ERROR;
}

}  // namespace outbox::detail::nats
