#pragma once
/// \file
/// Owners of the nats.c handles `outbox::nats_transport` uses: each frees its handle with the
/// matching nats.c call, whatever way the scope ends. Internal (`outbox::detail::nats`).

#include <memory>
#include <string>

#include <nats/nats.h>

namespace outbox::detail::nats {

struct options_deleter {
  void operator()(natsOptions* p) const noexcept { natsOptions_Destroy(p); }
};
/// Closes before it frees: Destroy alone would leave the reconnect thread running until the
/// library's own clean-up.
struct connection_deleter {
  void operator()(natsConnection* p) const noexcept {
    natsConnection_Close(p);
    natsConnection_Destroy(p);
  }
};
struct context_deleter {
  void operator()(jsCtx* p) const noexcept { jsCtx_Destroy(p); }
};
struct message_deleter {
  void operator()(natsMsg* p) const noexcept { natsMsg_Destroy(p); }
};
struct statistics_deleter {
  void operator()(natsStatistics* p) const noexcept { natsStatistics_Destroy(p); }
};
struct stream_info_deleter {
  void operator()(jsStreamInfo* p) const noexcept { jsStreamInfo_Destroy(p); }
};

using options_ptr = std::unique_ptr<natsOptions, options_deleter>;
using connection_ptr = std::unique_ptr<natsConnection, connection_deleter>;
using context_ptr = std::unique_ptr<jsCtx, context_deleter>;
using message_ptr = std::unique_ptr<natsMsg, message_deleter>;
using statistics_ptr = std::unique_ptr<natsStatistics, statistics_deleter>;
using stream_info_ptr = std::unique_ptr<jsStreamInfo, stream_info_deleter>;

/// What js_PublishAsyncGetPendingList hands back: the messages still awaiting their ack, now
/// ours again. Freed (list and messages) when it goes away.
struct pending_list {
  natsMsgList list{};
  pending_list() = default;
  pending_list(const pending_list&) = delete;
  pending_list& operator=(const pending_list&) = delete;
  ~pending_list() {
    if (list.Msgs != nullptr) natsMsgList_Destroy(&list);
  }
};

/// nats.c's text for the last failure on this thread ("Payload 2097164 greater than maximum
/// allowed: 1048576"), else the status's generic text.
[[nodiscard]] inline std::string describe(natsStatus status) {
  const char* text = nats_GetLastError(nullptr);
  if (text != nullptr && *text != '\0') return text;
  return natsStatus_GetText(status);
}

}  // namespace outbox::detail::nats
