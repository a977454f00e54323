// Bit packing of small unsigned codes: see include/lowrank/compressors/bit_pack.h (docs/algorithms.md §6).
#include "lowrank/compressors/bit_pack.h"

#include <c10/util/Exception.h>

#include <cstring>

namespace lowrank {

namespace {
void check_bits(int bits) {
  TORCH_CHECK(bits == 1 || bits == 2 || bits == 4 || bits == 8, "bit packing: bits must be 1, 2, 4 or 8, got ", bits);
}
// log2 of the codes per byte: 3, 2, 1, 0 for bits 1, 2, 4, 8.
int per_byte_shift(int bits) { return bits == 1 ? 3 : bits == 2 ? 2 : bits == 4 ? 1 : 0; }
}  // namespace

int64_t packed_bytes(int64_t count, int bits) {
  check_bits(bits);
  return (count * bits + 7) / 8;
}

void pack_bits(const uint8_t* codes, int64_t count, int bits, uint8_t* packed) {
  check_bits(bits);
  if (count <= 0) return;
  uint8_t bad = 0;  // any bit at or above `bits` in any code
  if (bits == 8) {
    std::memcpy(packed, codes, static_cast<size_t>(count));
  } else {
    const int shift = per_byte_shift(bits);
    const int64_t slot_mask = (int64_t{1} << shift) - 1;
    std::memset(packed, 0, static_cast<size_t>(packed_bytes(count, bits)));
    for (int64_t i = 0; i < count; ++i) {
      const uint8_t c = codes[i];
      bad |= static_cast<uint8_t>(c >> bits);
      packed[i >> shift] |= static_cast<uint8_t>(c << ((i & slot_mask) * bits));
    }
  }
  TORCH_CHECK(bad == 0, "bit packing: a code does not fit in ", bits, " bits");
}

void unpack_bits(const uint8_t* packed, int64_t count, int bits, uint8_t* codes) {
  check_bits(bits);
  if (count <= 0) return;
  if (bits == 8) {
    std::memcpy(codes, packed, static_cast<size_t>(count));
    return;
  }
  const int shift = per_byte_shift(bits);
  const int64_t slot_mask = (int64_t{1} << shift) - 1;
  const unsigned mask = (1u << bits) - 1u;
  for (int64_t i = 0; i < count; ++i)
    codes[i] = static_cast<uint8_t>((packed[i >> shift] >> ((i & slot_mask) * bits)) & mask);
}

at::Tensor pack_bits(const at::Tensor& codes, int bits) {
  TORCH_CHECK(codes.scalar_type() == at::kByte, "pack_bits: codes must be uint8, got ", codes.scalar_type());
  const at::Tensor c = codes.contiguous();
  at::Tensor out = at::empty({packed_bytes(c.numel(), bits)}, at::kByte);
  pack_bits(c.data_ptr<uint8_t>(), c.numel(), bits, out.data_ptr<uint8_t>());
  return out;
}

at::Tensor unpack_bits(const at::Tensor& packed, int64_t count, int bits) {
  TORCH_CHECK(packed.scalar_type() == at::kByte, "unpack_bits: packed must be uint8, got ", packed.scalar_type());
  const at::Tensor p = packed.contiguous();
  TORCH_CHECK(p.numel() >= packed_bytes(count, bits), "unpack_bits: ", count, " codes of ", bits, " bits need ",
              packed_bytes(count, bits), " bytes, got ", p.numel());
  at::Tensor out = at::empty({count}, at::kByte);
  unpack_bits(p.data_ptr<uint8_t>(), count, bits, out.data_ptr<uint8_t>());
  return out;
}

}  // namespace lowrank
