#pragma once
/// \file
/// libcurl's handles in small RAII types, for `outbox::http_transport`: the process-wide
/// initialisation, an easy handle (one request), a multi handle (requests in flight together,
/// sharing one connection cache), a header list and a parsed URL.

#include <curl/curl.h>

#include <memory>
#include <string>

namespace outbox::detail::http {

/// `curl_global_init` once per process, before the first handle; never undone, because other
/// parts of the program may use libcurl too. libcurl 7.84+ makes the call itself thread-safe;
/// the function-local static makes it so on older versions.
inline bool curl_ready() noexcept {
  static const bool ready = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  return ready;
}

struct easy_deleter {
  void operator()(CURL* h) const noexcept { curl_easy_cleanup(h); }
};
struct multi_deleter {
  void operator()(CURLM* h) const noexcept { curl_multi_cleanup(h); }
};
struct slist_deleter {
  void operator()(curl_slist* h) const noexcept { curl_slist_free_all(h); }
};
struct url_deleter {
  void operator()(CURLU* h) const noexcept { curl_url_cleanup(h); }
};

using easy_handle = std::unique_ptr<CURL, easy_deleter>;
using multi_handle = std::unique_ptr<CURLM, multi_deleter>;
using url_handle = std::unique_ptr<CURLU, url_deleter>;

/// A `curl_slist` of request headers; `append` reports an allocation failure.
class header_list {
 public:
  bool append(const std::string& line) {
    curl_slist* grown = curl_slist_append(list_.get(), line.c_str());
    if (grown == nullptr) return false;
    (void)list_.release();  // now owned through `grown`, whose head is the same list
    list_.reset(grown);
    return true;
  }
  [[nodiscard]] curl_slist* get() const noexcept { return list_.get(); }
  void clear() noexcept { list_.reset(); }

 private:
  std::unique_ptr<curl_slist, slist_deleter> list_;
};

/// A string libcurl allocated (`curl_url_get`), freed with `curl_free`.
struct curl_string {
  char* text = nullptr;
  curl_string() = default;
  curl_string(const curl_string&) = delete;
  curl_string& operator=(const curl_string&) = delete;
  ~curl_string() { curl_free(text); }
};

}  // namespace outbox::detail::http
