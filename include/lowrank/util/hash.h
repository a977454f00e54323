#pragma once
// The project's two non-cryptographic mixing functions, written once:
//   FNV-1a (64 bit) for fingerprints of bytes (set-up agreement, weight checksums, file records);
//   SplitMix64 for deriving independent seeds from one (shared random streams, shuffles, init).
// SHA-256, for what users compare across runs, is util/sha256.h.
#include <cstddef>
#include <cstdint>
#include <string>

namespace lowrank {

/// The offset basis lowrank has always used: the published one (14695981039346656037) with its last
/// digit missing. Kept, because checkpoints, text-cache records and weight checksums written by
/// earlier versions hold hashes made with it; any odd-enough start value mixes as well.
constexpr uint64_t kFnv1aOffset = 1469598103934665603ULL;
constexpr uint64_t kFnv1aPrime = 1099511628211ULL;

/// FNV-1a over `n` bytes, continuing from `h` (kFnv1aOffset starts a new hash).
inline uint64_t fnv1a(const void* data, size_t n, uint64_t h = kFnv1aOffset) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * kFnv1aPrime;
  return h;
}
inline uint64_t fnv1a(const std::string& s, uint64_t h = kFnv1aOffset) { return fnv1a(s.data(), s.size(), h); }

/// SplitMix64's finalizer of z + golden gamma (Steele, Lea, Flood 2014): a bijection of 64-bit words
/// whose outputs for consecutive inputs are statistically independent.
inline uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace lowrank
