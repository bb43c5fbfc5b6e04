#pragma once
/// \file
/// CRC-32C (Castagnoli), the checksum of the file storage's records. On x86-64 with SSE4.2 (a
/// runtime check, so no -msse4.2 is needed) the CPU's crc32 instruction does it, eight bytes a
/// step; elsewhere a portable slicing-by-8 table does. Both give the same value for any input
/// (tests/storage/file.cpp checks them against each other and against the standard check value).

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define OUTBOX_CRC32C_X86 1
#else
#define OUTBOX_CRC32C_X86 0
#endif

namespace outbox::detail {

class crc32c_tables {
 public:
  constexpr crc32c_tables() : table_{} {
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78U & (0U - (c & 1U)));
      table_[0][i] = c;
    }
    for (std::size_t t = 1; t < 8; ++t)
      for (std::uint32_t i = 0; i < 256; ++i) table_[t][i] = (table_[t - 1][i] >> 8) ^ table_[0][table_[t - 1][i] & 0xFF];
  }
  [[nodiscard]] constexpr std::uint32_t at(std::size_t t, std::size_t i) const { return table_[t][i]; }

 private:
  std::array<std::array<std::uint32_t, 256>, 8> table_;
};

inline constexpr crc32c_tables crc32c_table{};

/// The table version: continues a CRC-32C over `bytes` (start with crc = 0). Any CPU.
[[nodiscard]] inline std::uint32_t crc32c_portable(std::string_view bytes, std::uint32_t crc = 0) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  std::size_t n = bytes.size();
  crc = ~crc;
  while (n >= 8) {
    const std::uint32_t lo = crc ^ (static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
                                    static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24);
    const std::uint32_t hi = static_cast<std::uint32_t>(p[4]) | static_cast<std::uint32_t>(p[5]) << 8 |
                             static_cast<std::uint32_t>(p[6]) << 16 | static_cast<std::uint32_t>(p[7]) << 24;
    crc = crc32c_table.at(7, lo & 0xFF) ^ crc32c_table.at(6, (lo >> 8) & 0xFF) ^
          crc32c_table.at(5, (lo >> 16) & 0xFF) ^ crc32c_table.at(4, lo >> 24) ^ crc32c_table.at(3, hi & 0xFF) ^
          crc32c_table.at(2, (hi >> 8) & 0xFF) ^ crc32c_table.at(1, (hi >> 16) & 0xFF) ^ crc32c_table.at(0, hi >> 24);
    p += 8;
    n -= 8;
  }
  while (n-- > 0) crc = (crc >> 8) ^ crc32c_table.at(0, (crc ^ *p++) & 0xFF);
  return ~crc;
}

#if OUTBOX_CRC32C_X86
/// The SSE4.2 version; call only where `crc32c_hardware_available()` is true. x86 is little-endian,
/// so an 8-byte load is the eight bytes in stream order, as the instruction expects.
[[nodiscard]] __attribute__((target("sse4.2"))) inline std::uint32_t crc32c_sse42(std::string_view bytes,
                                                                                  std::uint32_t crc = 0) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  std::size_t n = bytes.size();
  unsigned long long c = ~crc;
  while (n >= 8) {
    unsigned long long word;
    std::memcpy(&word, p, 8);
    c = __builtin_ia32_crc32di(c, word);
    p += 8;
    n -= 8;
  }
  auto c32 = static_cast<unsigned int>(c);
  if (n >= 4) {
    unsigned int word;
    std::memcpy(&word, p, 4);
    c32 = __builtin_ia32_crc32si(c32, word);
    p += 4;
    n -= 4;
  }
  while (n-- > 0) c32 = __builtin_ia32_crc32qi(c32, *p++);
  return ~c32;
}

[[nodiscard]] inline bool crc32c_hardware_available() noexcept {
  // __builtin_cpu_init first: the first call may come from a static initialiser that runs
  // before the one that sets up __builtin_cpu_supports.
  static const bool available = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") != 0;
  }();
  return available;
}
#else
[[nodiscard]] inline bool crc32c_hardware_available() noexcept { return false; }
#endif

/// Continues a CRC-32C over `bytes` (start with crc = 0), on the fastest path this CPU has.
[[nodiscard]] inline std::uint32_t crc32c(std::string_view bytes, std::uint32_t crc = 0) noexcept {
#if OUTBOX_CRC32C_X86
  if (crc32c_hardware_available()) return crc32c_sse42(bytes, crc);
#endif
  return crc32c_portable(bytes, crc);
}

}  // namespace outbox::detail

#undef OUTBOX_CRC32C_X86
