#pragma once
/// \file
/// CRC-32C (Castagnoli), the checksum of the file storage's records: portable slicing-by-8.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

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

/// Continues a CRC-32C over `bytes` (start with crc = 0).
[[nodiscard]] inline std::uint32_t crc32c(std::string_view bytes, std::uint32_t crc = 0) noexcept {
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

}  // namespace outbox::detail
