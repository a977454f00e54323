#pragma once
// Reader of IDX files (the format of MNIST and Fashion-MNIST, LeCun et al.), gzip-compressed or
// plain (zlib reads both).
//
// Layout: bytes 0–1 are zero, byte 2 is the element type (only 0x08, unsigned byte, is
// supported: it is what every (Fashion-)MNIST file uses), byte 3 the number of dimensions d; then d
// big-endian uint32 sizes; then the product of the sizes in elements, row-major, and nothing after.
//
// Every defect is an error naming the path and what was expected and seen: missing or unreadable
// file, bad magic, unsupported type, zero dimensions, truncated data, trailing bytes, corrupt gzip.
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace lowrank {
namespace data {

struct IdxArray {
  std::vector<int64_t> dims;  ///< sizes from the header, outermost first
  at::Tensor data;            ///< uint8 with shape `dims`
};

/// Reads the whole file at `path`. Throws c10::Error naming `path` on any defect.
IdxArray read_idx(const std::string& path);

/// The 4 + 4·d header bytes of an unsigned-byte IDX file with sizes `dims` (for writers and tests).
std::vector<uint8_t> idx_header(const std::vector<int64_t>& dims);

}  // namespace data
}  // namespace lowrank
