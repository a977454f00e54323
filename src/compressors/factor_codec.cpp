// Quantized low-rank factors: see include/lowrank/compressors/factor_codec.h (docs/algorithms.md §6).
#include "lowrank/compressors/factor_codec.h"

#include <c10/util/Exception.h>

#include <limits>
#include <vector>

#include "lowrank/compressors/group_ops.h"

namespace lowrank {

namespace {

constexpr double kHalfMax = 65504.0;  // the largest finite IEEE half
constexpr double kCodeMax = 127.0;    // int8 codes lie in [−127, 127]: symmetric, −128 unused

at::ScalarType sixteen_bit_type(FactorDtype dtype) { return dtype == FactorDtype::kBf16 ? at::kBFloat16 : at::kHalf; }

// `bytes` (uint8, 1-D) read as `type`: a view where its offset allows one, else a view of a copy.
at::Tensor bytes_as(const at::Tensor& bytes, at::ScalarType type) {
  const int64_t size = static_cast<int64_t>(c10::elementSize(type));
  const bool aligned = bytes.is_contiguous() && bytes.storage_offset() % size == 0;
  return (aligned ? bytes : bytes.clone()).view(type);
}

std::vector<std::vector<int64_t>> shapes_of(const FlatBuffer& buf) {
  std::vector<std::vector<int64_t>> shapes;
  for (const auto& v : buf.views) shapes.push_back(v.sizes().vec());
  return shapes;
}

}  // namespace

int64_t factor_bytes(FactorDtype dtype, int64_t rows, int64_t k, at::ScalarType work) {
  switch (dtype) {
    case FactorDtype::kFp32:
      return rows * k * static_cast<int64_t>(c10::elementSize(work));
    case FactorDtype::kBf16:
    case FactorDtype::kFp16:
      return 2 * rows * k;
    case FactorDtype::kInt8:
      return rows * k + 4 * k;  // codes, then one fp32 scale per factor
  }
  TORCH_INTERNAL_ASSERT(false, "factor_bytes: unhandled factor dtype");
}

at::Tensor FactorCodec::encode_(const FlatBuffer& buf) const {
  if (exact()) return at::Tensor();
  at::Tensor payload;
  if (dtype_ == FactorDtype::kInt8) {
    payload = encode_int8(buf);
  } else {
    // fp16: clamped first, so that a large value becomes ±65504 rather than inf (the own factor is
    // rounded to the clamped value below, so the residual keeps what the clamp cut off).
    // bf16: clamped to its largest finite value, which an fp32 value above it would round past.
    const double limit = dtype_ == FactorDtype::kFp16 ? kHalfMax : double(std::numeric_limits<c10::BFloat16>::max());
    const at::Tensor x = buf.flat.clamp(-limit, limit);
    payload = x.to(sixteen_bit_type(dtype_)).contiguous().view(at::kByte);
  }
  decode_into(payload, buf);  // the own factor as every rank decodes it, bit for bit
  return payload;
}

// Per view [b, x, y]: scale = max|factor| / 127 as fp32 over scale_dim() (one per member and
// factor), code = round(x / scale) clamped to [−127, 127], 0 where the scale is 0. The payload is
// every code in the flat buffer's order, then every scale in view order ([b, 1, y] or [b, x, 1]).
// A non-finite factor gets a non-finite scale, so its decode stays non-finite.
at::Tensor FactorCodec::encode_int8(const FlatBuffer& buf) const {
  if (buf.views.empty()) return at::empty({0}, at::kByte);
  std::vector<at::Tensor> codes, scales;
  for (const auto& v : buf.views) {
    // At most FLT_MAX, so that an fp64 factor beyond fp32's range still decodes to finite values.
    const at::Tensor s =
        v.abs().amax(scale_dim(), /*keepdim=*/true).div(kCodeMax).clamp_max(std::numeric_limits<float>::max()).to(at::kFloat);
    const at::Tensor sw = s.to(v.scalar_type());
    const at::Tensor safe = sw.masked_fill(sw.eq(0), 1);  // an all-zero factor: codes 0, decodes to 0
    codes.push_back(v.div(safe).round_().clamp_(-kCodeMax, kCodeMax).to(at::kChar).reshape({-1}));
    scales.push_back(s.contiguous().reshape({-1}));
  }
  return at::cat({at::cat(codes).view(at::kByte), at::cat(scales).view(at::kByte)});
}

void FactorCodec::decode_into(const at::Tensor& payload, const FlatBuffer& buf) const {
  TORCH_INTERNAL_ASSERT(!exact(), "FactorCodec: fp32 factors are not encoded");
  TORCH_INTERNAL_ASSERT(payload.scalar_type() == at::kByte && payload.dim() == 1,
                        "FactorCodec: the payload must be 1-D uint8");
  if (dtype_ == FactorDtype::kInt8) {
    decode_int8(payload, buf);
    return;
  }
  TORCH_INTERNAL_ASSERT(payload.numel() == 2 * buf.flat.numel(), "FactorCodec: payload of ", payload.numel(),
                        " bytes for ", buf.flat.numel(), " 16-bit values");
  buf.flat.copy_(bytes_as(payload, sixteen_bit_type(dtype_)));  // exact: every 16-bit value is representable
}

void FactorCodec::decode_int8(const at::Tensor& payload, const FlatBuffer& buf) const {
  const int64_t n = buf.flat.numel();
  int64_t scale_count = 0;
  for (const auto& v : buf.views) scale_count += v.numel() / v.size(scale_dim());
  TORCH_INTERNAL_ASSERT(payload.numel() == n + 4 * scale_count, "FactorCodec: int8 payload of ", payload.numel(),
                        " bytes, expected ", n + 4 * scale_count);
  const at::Tensor codes = payload.narrow(0, 0, n).view(at::kChar);
  const at::Tensor scales = bytes_as(payload.narrow(0, n, 4 * scale_count), at::kFloat);
  int64_t c = 0, s = 0;
  for (const auto& v : buf.views) {
    std::vector<int64_t> scale_shape = v.sizes().vec();
    scale_shape[scale_dim()] = 1;
    const int64_t count = v.numel() / v.size(scale_dim());
    const at::Tensor sw = scales.narrow(0, s, count).view(scale_shape).to(v.scalar_type());
    at::Tensor out = v;
    at::mul_out(out, codes.narrow(0, c, v.numel()).view(v.sizes()).to(v.scalar_type()), sw);  // code · scale
    c += v.numel();
    s += count;
  }
}

void FactorCodec::sum_(comm::Communicator& comm, const FlatBuffer& buf, const at::Tensor& payload) const {
  if (exact()) {
    comm.all_reduce_(buf.flat);
    return;
  }
  const std::vector<at::Tensor> all = comm.all_gather(payload);  // one collective, this rank's bytes
  decode_into(all[0], buf);
  if (all.size() < 2) return;
  FlatBuffer term = FlatBuffer::zeros(shapes_of(buf), buf.flat.options());
  for (size_t r = 1; r < all.size(); ++r) {  // rank order: the same sum, bit for bit, on every rank
    decode_into(all[r], term);
    buf.flat.add_(term.flat);
  }
}

void FactorCodec::average_(comm::Communicator& comm, const FlatBuffer& buf, const at::Tensor& payload) const {
  if (exact()) {
    all_reduce_average_(comm, buf.flat);
    return;
  }
  sum_(comm, buf, payload);
  if (comm.size() > 1) buf.flat.div_(comm.size());
}

}  // namespace lowrank
