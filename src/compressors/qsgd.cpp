// QSGD: see the walk-through and the wire layout in include/lowrank/compressors/qsgd.h
// (Alistarh et al. 2017; docs/algorithms.md §6).
#include "lowrank/compressors/qsgd.h"

#include <ATen/Dispatch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "lowrank/compressors/bit_pack.h"
#include "lowrank/compressors/group_ops.h"
#include "lowrank/compressors/packed_decode.h"
#include "lowrank/compressors/shared_random.h"

namespace lowrank {

void QsgdOptions::validate() const {
  TORCH_CHECK(levels() >= 1 && levels() <= 127, "qsgd: levels must be in [1, 127], got ", levels());
  TORCH_CHECK(bucket_size() >= 1 && bucket_size() <= (int64_t(1) << 31),
              "qsgd: bucket_size must be in [1, 2147483648], got ", bucket_size());
}

int Qsgd::code_bits() const {
  const int64_t codes = 2 * options_.levels() + 1;
  for (int bits : {1, 2, 4})
    if ((int64_t{1} << bits) >= codes) return bits;
  return 8;
}

int64_t Qsgd::member_bytes(int64_t numel) const {
  const int64_t buckets = (numel + options_.bucket_size() - 1) / options_.bucket_size();
  return packed_bytes(numel, code_bits()) + 4 * buckets;
}

double Qsgd::size_test_bytes(int64_t m, int64_t n) const { return static_cast<double>(member_bytes(m * n)); }

int64_t Qsgd::wire_bytes(int64_t m, int64_t n, int64_t, at::ScalarType) const { return member_bytes(m * n); }

namespace {

// One member matrix of a group as it travels: N codes of `bits` bits, then ceil(N / bucket) fp32 norms.
struct MemberCode {
  int64_t numel = 0, bucket = 1, levels = 1;
  int bits = 8;
  int64_t code_bytes() const { return packed_bytes(numel, bits); }
  int64_t bytes() const { return code_bytes() + 4 * ((numel + bucket - 1) / bucket); }
};

// Writes the codes c + s of x[0, N) (uniforms u[0, N)) and the fp32 bucket norms into `wire`;
// `codes` is scratch of N bytes.
template <typename T>
void quantize_member(const MemberCode& mc, const T* x, const T* u, uint8_t* codes, uint8_t* wire) {
  uint8_t* norms = wire + mc.code_bytes();
  const T s = static_cast<T>(mc.levels);
  for (int64_t b = 0, start = 0; start < mc.numel; ++b, start += mc.bucket) {
    const int64_t end = std::min(start + mc.bucket, mc.numel);
    double sq = 0;
    for (int64_t j = start; j < end; ++j) sq += static_cast<double>(x[j]) * static_cast<double>(x[j]);
    // ‖v‖ as sent (both sides use it), at most FLT_MAX so that an fp64 bucket beyond fp32's range
    // decodes to finite values (the residual keeps the rest when error feedback is on).
    const float norm = static_cast<float>(std::min(std::sqrt(sq), double(std::numeric_limits<float>::max())));
    std::memcpy(norms + 4 * b, &norm, sizeof(float));
    // s/‖v‖ in double: a subnormal fp32 norm would overflow it in fp32. A zero bucket sends ℓ = 0.
    const T scale = norm > 0 ? static_cast<T>(std::min(double(s) / double(norm), double(std::numeric_limits<T>::max())))
                             : T(0);
    for (int64_t j = start; j < end; ++j) {
      const T r = std::floor(std::abs(x[j]) * scale + u[j]);      // ℓ = floor(|x|/‖v‖·s + u)
      const int64_t l = r < s ? (r > 0 ? static_cast<int64_t>(r) : 0) : mc.levels;  // ≤ s despite rounding
      codes[j] = static_cast<uint8_t>(mc.levels + (x[j] < 0 ? -l : l));
    }
  }
  pack_bits(codes, mc.numel, mc.bits, wire);
}

// Calls f(j, ‖v‖/s · c_j) for every element j of one member's wire bytes; `codes` is scratch of N bytes.
template <typename T, typename F>
void decode_member(const MemberCode& mc, const uint8_t* wire, uint8_t* codes, F&& f) {
  unpack_bits(wire, mc.numel, mc.bits, codes);
  const uint8_t* norms = wire + mc.code_bytes();
  for (int64_t b = 0, start = 0; start < mc.numel; ++b, start += mc.bucket) {
    float norm = 0;
    std::memcpy(&norm, norms + 4 * b, sizeof(float));
    const T level = static_cast<T>(norm) / static_cast<T>(mc.levels);  // ‖v‖/s
    const int64_t end = std::min(start + mc.bucket, mc.numel);
    for (int64_t j = start; j < end; ++j) f(j, level * static_cast<T>(static_cast<int64_t>(codes[j]) - mc.levels));
  }
}

// This rank's codes of every member of `g`, from its own rounding stream, into wire[0, b·bytes).
template <typename T>
void encode_group(const ShapeGroup& g, const MemberCode& mc, const StepContext& ctx, uint8_t* wire,
                  std::vector<uint8_t>& codes) {
  const at::Tensor x = g.delta.contiguous();
  auto gen = shared_generator(ctx.seed, ctx.compressed_step,
                              rank_stream_id(Stream::kRounding, g.ordinal, ctx.comm->rank()));
  const at::Tensor u = at::rand({g.batch(), mc.numel}, gen, x.options());
  const T* xp = x.data_ptr<T>();
  const T* up = u.data_ptr<T>();
  for (int64_t j = 0; j < g.batch(); ++j)
    quantize_member<T>(mc, xp + j * mc.numel, up + j * mc.numel, codes.data(), wire + j * mc.bytes());
}

// ĝ = (Σ_r dec_r) / W in rank order into g.out; e_i = Δ_i − dec_i (this rank's `own` bytes) into
// g.residual. `offset`: the group's first byte in every rank's part.
template <typename T>
void decode_group(ShapeGroup& g, const MemberCode& mc, const std::vector<at::Tensor>& parts, const uint8_t* own,
                  int64_t offset, std::vector<uint8_t>& codes) {
  decode_packed_group<T>(g, parts, own, offset, mc.bytes(), [&](const uint8_t* wire, auto&& f) {
    decode_member<T>(mc, wire, codes.data(), f);
  });
}

template <typename T>
void run(const MemberCode& proto, std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  std::vector<MemberCode> member(groups.size(), proto);
  std::vector<int64_t> offset(groups.size());
  int64_t total = 0, most = 0;
  for (size_t i = 0; i < groups.size(); ++i) {
    member[i].numel = groups[i].m * groups[i].n;
    offset[i] = total;
    total += groups[i].batch() * member[i].bytes();
    most = std::max(most, member[i].numel);
  }
  std::vector<uint8_t> codes(static_cast<size_t>(most));
  at::Tensor wire = at::empty({total}, at::kByte);
  for (size_t i = 0; i < groups.size(); ++i)
    encode_group<T>(groups[i], member[i], ctx, wire.data_ptr<uint8_t>() + offset[i], codes);
  std::vector<at::Tensor> parts = ctx.comm->all_gather(wire);  // the one collective
  for (auto& p : parts) p = p.contiguous();
  for (size_t i = 0; i < groups.size(); ++i)
    decode_group<T>(groups[i], member[i], parts, wire.data_ptr<uint8_t>() + offset[i], offset[i], codes);
}

}  // namespace

void Qsgd::compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  if (groups.empty()) return;
  MemberCode proto;
  proto.bucket = options_.bucket_size();
  proto.levels = options_.levels();
  proto.bits = code_bits();
  AT_DISPATCH_FLOATING_TYPES(group_dtype(groups), "qsgd", [&] { run<scalar_t>(proto, groups, ctx); });
}

}  // namespace lowrank
