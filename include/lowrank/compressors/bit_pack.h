#pragma once
// Bit packing of small unsigned codes, shared by the quantizers (qsgd, signsgd; docs/algorithms.md §6).
//
// `count` codes of `bits` bits each (bits ∈ {1, 2, 4, 8}, every code < 2^bits) travel in
// packed_bytes(count, bits) = ceil(count·bits / 8) bytes, little-endian within a byte: code i sits in
// byte i·bits / 8 at bit offset (i·bits) % 8, so the first code of a byte takes its lowest bits. The
// unused high bits of the last byte are 0. The quantizers pack every member matrix to its own byte
// boundary, so their wire bytes add up over matrices (Compressor::wire_bytes).
//
// The raw-pointer forms are plain loops (no per-element ATen calls); the tensor forms wrap them.
#include <ATen/ATen.h>

#include <cstdint>

namespace lowrank {

/// ceil(count·bits / 8): the bytes of `count` packed codes of `bits` bits.
int64_t packed_bytes(int64_t count, int bits);

/// Packs codes[0, count) into packed[0, packed_bytes(count, bits)). Throws when bits is not 1, 2, 4
/// or 8 or when some code is >= 2^bits.
void pack_bits(const uint8_t* codes, int64_t count, int bits, uint8_t* packed);
/// Unpacks `count` codes of `bits` bits from `packed` into codes[0, count).
void unpack_bits(const uint8_t* packed, int64_t count, int bits, uint8_t* codes);

/// The uint8 tensor `codes` (any shape, read in row-major order) packed into a 1-D uint8 tensor of
/// packed_bytes(codes.numel(), bits) bytes.
at::Tensor pack_bits(const at::Tensor& codes, int bits);
/// The first `count` codes of the packed uint8 tensor `packed` (at least packed_bytes(count, bits)
/// bytes), as a 1-D uint8 tensor.
at::Tensor unpack_bits(const at::Tensor& packed, int64_t count, int bits);

}  // namespace lowrank
