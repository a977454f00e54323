#pragma once
// SHA-256 (FIPS 180-4), for checkpoint checksums and the summary's weights_sha256.
//
//   Sha256 h;
//   h.update(bytes, n);
//   std::string hex = h.hex();   // 64 lowercase hex digits; the object is finished afterwards
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace lowrank {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  void update(const std::string& s) { update(s.data(), s.size()); }
  /// The digest; update() must not be called afterwards.
  std::array<uint8_t, 32> digest();
  /// digest() as 64 lowercase hex digits.
  std::string hex();

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buf_{};
  size_t used_ = 0;
  uint64_t bytes_ = 0;
  bool finished_ = false;
};

/// SHA-256 of `s` as 64 lowercase hex digits.
std::string sha256_hex(const std::string& s);

}  // namespace lowrank
