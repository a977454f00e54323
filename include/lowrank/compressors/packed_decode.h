#pragma once
// The last step of the compressors whose payload is packed bytes (qsgd, signsgd): every rank's part
// of one all-gather decoded into ĝ in rank order, and this rank's own part into its residual.
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "lowrank/compressors/compressor.h"

namespace lowrank {

/// For one shape group whose members take `stride` bytes each from byte `offset` on in every rank's
/// part, with `decode_member(wire, f)` calling f(k, value) for every element k of the member at `wire`:
///   ĝ   = (Σ_r decode(part_r)) / W, summed in rank order in T (bit-identical on every rank);
///   e_i = Δ_i − decode(own), element by element right after that element of Δ_i is read, so
///         g.residual may alias g.delta (Traits::in_place_residual).
template <typename T, typename DecodeMember>
void decode_packed_group(ShapeGroup& g, const std::vector<at::Tensor>& parts, const uint8_t* own, int64_t offset,
                         int64_t stride, DecodeMember&& decode_member) {
  // The reducer's group tensors are contiguous views of its buckets; a scratch copy otherwise.
  auto writable = [](const at::Tensor& t) { return t.is_contiguous() ? t : at::empty(t.sizes(), t.options()); };
  const int64_t N = g.m * g.n;
  at::Tensor out = writable(g.out), res = writable(g.residual);
  const at::Tensor x = g.delta.contiguous();
  out.zero_();
  T* acc = out.data_ptr<T>();
  for (const at::Tensor& part : parts)
    for (int64_t j = 0; j < g.batch(); ++j)
      decode_member(part.data_ptr<uint8_t>() + offset + j * stride, [&](int64_t k, T v) { acc[j * N + k] += v; });
  if (parts.size() > 1) out.div_(static_cast<double>(parts.size()));
  const T* xp = x.data_ptr<T>();
  T* rp = res.data_ptr<T>();
  for (int64_t j = 0; j < g.batch(); ++j)
    decode_member(own + j * stride, [&](int64_t k, T v) { rp[j * N + k] = xp[j * N + k] - v; });
  if (!out.is_same(g.out)) g.out.copy_(out);
  if (!res.is_same(g.residual)) g.residual.copy_(res);
}

}  // namespace lowrank
