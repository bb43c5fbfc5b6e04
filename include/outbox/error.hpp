#pragma once
/// \file
/// The one error model of outbox: `outbox::errc` codes in their own `std::error_category`,
/// `outbox::error` (a code plus a message that names the failing thing), and `outbox::result<T>`,
/// which every operation that can fail at run time returns. Exceptions are reserved for
/// construction and programmer errors and are thrown from the cold helpers below
/// (`detail::throw_invalid_argument`, ...).

#include <cassert>
#include <new>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

namespace outbox {

/// What went wrong, independent of the storage or transport that noticed it.
enum class errc {
  invalid_argument = 1,  ///< an argument or configuration value is out of its domain
  payload_too_large,     ///< an event payload exceeds the configured limit
  no_active_user,        ///< an event names no user and no session is active
  not_found,             ///< no event / entity with that id
  invalid_state,         ///< the operation does not apply to the event's current status
  storage_failure,       ///< the storage could not complete a write; nothing of it was applied
  io_error,              ///< the operating system refused a read, write or sync
  disk_full,             ///< no space left for a write; nothing of it was applied
  busy,                  ///< another writer holds the storage; retry later
  corrupt_data,          ///< stored data failed validation (checksum, framing, schema content)
  schema_mismatch,       ///< stored data has a layout this version does not understand
  schema_too_new,        ///< stored data was written by a newer version; left untouched
  already_open,          ///< another process or object owns the storage
  closed,                ///< the storage or outbox was closed
  conflict,              ///< the data changed since it was read; read again and retry
  unauthorized,          ///< the backend refused the credentials, also fresh ones; log in again
};

namespace detail {
class error_category_impl final : public std::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "outbox"; }
  [[nodiscard]] std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::invalid_argument: return "invalid argument";
      case errc::payload_too_large: return "payload too large";
      case errc::no_active_user: return "no active user";
      case errc::not_found: return "not found";
      case errc::invalid_state: return "invalid state for this operation";
      case errc::storage_failure: return "storage failure";
      case errc::io_error: return "I/O error";
      case errc::disk_full: return "disk full";
      case errc::busy: return "storage busy";
      case errc::corrupt_data: return "corrupt data";
      case errc::schema_mismatch: return "schema mismatch";
      case errc::schema_too_new: return "schema written by a newer version";
      case errc::already_open: return "storage already open elsewhere";
      case errc::closed: return "closed";
      case errc::conflict: return "conflicting concurrent change";
      case errc::unauthorized: return "unauthorized";
    }
    return "unknown outbox error";
  }
};
}  // namespace detail

/// The category of `outbox::errc`; its name() is "outbox".
[[nodiscard]] inline const std::error_category& error_category() noexcept {
  static const detail::error_category_impl category;
  return category;
}

[[nodiscard]] inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

}  // namespace outbox

template <>
struct std::is_error_code_enum<outbox::errc> : std::true_type {};

namespace outbox {

/// A failure: a typed code for programs and a message for people ("events.log: checksum
/// mismatch at offset 4096"). An empty message means the code's own message says it all.
struct error {
  std::error_code code;
  std::string message;

  error() = default;
  error(std::error_code c, std::string m = {}) : code(c), message(std::move(m)) {}  // NOLINT
  error(errc e, std::string m = {}) : code(make_error_code(e)), message(std::move(m)) {}  // NOLINT

  /// "outbox: corrupt data: events.log: checksum mismatch at offset 4096".
  [[nodiscard]] std::string what() const {
    std::string text = std::string(code.category().name()) + ": " + code.message();
    if (!message.empty()) text += ": " + message;
    return text;
  }
  friend bool operator==(const error& e, errc c) noexcept { return e.code == c; }
};

/// Thrown only for construction failures and programmer errors (such as reading the value of a
/// failed result). Carries the same code and message as the `outbox::error` it came from, and
/// its what() is that error's what(): one format, whichever way an error reaches a log.
class exception : public std::system_error {
 public:
  explicit exception(const outbox::error& e)
      : std::system_error(e.code, e.message), error_(e), what_(e.what()) {}
  [[nodiscard]] const outbox::error& error() const noexcept { return error_; }
  [[nodiscard]] const char* what() const noexcept override { return what_.c_str(); }

 private:
  outbox::error error_;
  std::string what_;
};

namespace detail {
[[noreturn, gnu::cold, gnu::noinline]] inline void throw_error(const outbox::error& e) {
  throw outbox::exception(e);
}
[[noreturn, gnu::cold, gnu::noinline]] inline void throw_invalid_argument(std::string message) {
  throw outbox::exception(outbox::error(errc::invalid_argument, std::move(message)));
}
}  // namespace detail

/// Either a value or an `outbox::error`. A small stand-in for C++23 `std::expected` so the
/// library stays C++20; `value()` on a failed result throws `outbox::exception`. Every storage
/// call returns one, so it is a plain tagged union rather than a `std::variant`, whose
/// machinery each translation unit would otherwise instantiate for every `T`.
template <class T>
class [[nodiscard]] result {
 public:
  result(T value) : has_value_(true) { ::new (static_cast<void*>(&value_)) T(std::move(value)); }  // NOLINT
  result(outbox::error e) : has_value_(false) {  // NOLINT
    ::new (static_cast<void*>(&error_)) outbox::error(std::move(e));
    assert(error_.code && "an outbox::result error needs a code");
  }
  result(errc e, std::string message = {}) : result(outbox::error(e, std::move(message))) {}  // NOLINT

  result(const result& other)
    requires std::is_copy_constructible_v<T>
      : has_value_(other.has_value_) {
    if (has_value_) ::new (static_cast<void*>(&value_)) T(other.value_);
    else ::new (static_cast<void*>(&error_)) outbox::error(other.error_);
  }
  result(result&& other) noexcept(std::is_nothrow_move_constructible_v<T>) : has_value_(other.has_value_) {
    if (has_value_) ::new (static_cast<void*>(&value_)) T(std::move(other.value_));
    else ::new (static_cast<void*>(&error_)) outbox::error(std::move(other.error_));
  }
  result& operator=(const result& other)
    requires std::is_copy_constructible_v<T>
  {
    if (this != &other) *this = result(other);
    return *this;
  }
  result& operator=(result&& other) noexcept(std::is_nothrow_move_constructible_v<T> &&
                                             std::is_nothrow_move_assignable_v<T>) {
    if (this == &other) return *this;
    if (has_value_ && other.has_value_) {
      value_ = std::move(other.value_);
    } else if (!has_value_ && !other.has_value_) {
      error_ = std::move(other.error_);
    } else if (other.has_value_) {
      error_.~error();
      if constexpr (std::is_nothrow_move_constructible_v<T>) {
        ::new (static_cast<void*>(&value_)) T(std::move(other.value_));
      } else {
        try {
          ::new (static_cast<void*>(&value_)) T(std::move(other.value_));
        } catch (...) {
          ::new (static_cast<void*>(&error_)) outbox::error();  // an error without a code
          throw;
        }
      }
      has_value_ = true;
    } else {
      value_.~T();
      has_value_ = false;
      ::new (static_cast<void*>(&error_)) outbox::error(std::move(other.error_));
    }
    return *this;
  }
  ~result() { destroy(); }

  [[nodiscard]] bool has_value() const noexcept { return has_value_; }
  explicit operator bool() const noexcept { return has_value_; }

  [[nodiscard]] T& value() & {
    if (!has_value_) detail::throw_error(error_);
    return value_;
  }
  [[nodiscard]] const T& value() const& {
    if (!has_value_) detail::throw_error(error_);
    return value_;
  }
  /// By value: `for (auto& x : make_result().value())` must not dangle.
  [[nodiscard]] T value() && {
    if (!has_value_) detail::throw_error(error_);
    return std::move(value_);
  }
  [[nodiscard]] T& operator*() & noexcept { return value_; }
  [[nodiscard]] const T& operator*() const& noexcept { return value_; }
  [[nodiscard]] T* operator->() noexcept { return &value_; }
  [[nodiscard]] const T* operator->() const noexcept { return &value_; }

  /// The error; only meaningful when `!has_value()`.
  [[nodiscard]] const outbox::error& error() const& noexcept {
    assert(!has_value_);
    return error_;
  }

 private:
  void destroy() noexcept {
    if (has_value_) value_.~T();
    else error_.~error();
  }

  union {
    T value_;
    outbox::error error_;
  };
  bool has_value_;
};

/// `result<void>`: success, or an error.
template <>
class [[nodiscard]] result<void> {
 public:
  result() = default;
  result(outbox::error e) : error_(std::move(e)) {  // NOLINT
    assert(error_.code && "an outbox::result error needs a code");
  }
  result(errc e, std::string message = {}) : error_(e, std::move(message)) {}  // NOLINT

  [[nodiscard]] bool has_value() const noexcept { return !error_.code; }
  explicit operator bool() const noexcept { return has_value(); }
  void value() const {
    if (!has_value()) detail::throw_error(error_);
  }
  [[nodiscard]] const outbox::error& error() const& noexcept { return error_; }

 private:
  outbox::error error_;
};

}  // namespace outbox
