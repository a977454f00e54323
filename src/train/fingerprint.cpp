#include "lowrank/train/fingerprint.h"

#include <cstdio>
#include <cstring>
#include <sstream>

#include "lowrank/util/hash.h"
#include "lowrank/util/sha256.h"

namespace lowrank {
namespace train {
namespace {

// FNV-1a's step over the bytes of a tensor taken eight at a time (the tail byte by byte): every
// byte and its position count, at memory speed (Fashion-MNIST's 188 MB of pixels in well under
// 0.1 s). Not util's byte-wise fnv1a, whose hashes differ: checkpoints record these.
uint64_t tensor_hash(const at::Tensor& tensor, uint64_t h = kFnv1aOffset) {
  const at::Tensor t = tensor.contiguous();
  const auto* b = static_cast<const unsigned char*>(t.data_ptr());
  const size_t n = t.nbytes(), words = n / 8;
  for (size_t i = 0; i < words; ++i) {
    uint64_t w;
    std::memcpy(&w, b + 8 * i, 8);
    h = (h ^ w) * kFnv1aPrime;
  }
  return fnv1a(b + 8 * words, n - 8 * words, h);
}

}  // namespace

uint64_t weights_checksum(const torch::nn::Module& module) {
  uint64_t h = kFnv1aOffset;
  for (const auto& p : module.parameters()) {
    const at::Tensor t = p.detach().contiguous();
    h = fnv1a(t.data_ptr(), t.nbytes(), h);
  }
  return h;
}

std::string weights_sha256(const torch::nn::Module& module) {
  Sha256 h;
  auto add = [&h](const std::string& name, const at::Tensor& t) {
    const at::Tensor c = t.detach().contiguous();
    h.update(name);
    h.update(c.data_ptr(), c.nbytes());
  };
  for (const auto& kv : module.named_parameters()) add("p:" + kv.key(), kv.value());
  for (const auto& kv : module.named_buffers()) add("b:" + kv.key(), kv.value());
  return h.hex();
}

std::string checksum_hex(uint64_t checksum) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%016llx", static_cast<unsigned long long>(checksum));
  return buf;
}

std::string data_fingerprint(const data::Dataset& d) {
  std::ostringstream os;
  if (d.is_tokens()) {
    os << d.name << " " << d.tokens.sizes() << " tokens " << checksum_hex(tensor_hash(d.tokens)) << " vocab "
       << d.classes;
    return os.str();
  }
  os << d.name << " " << d.images.sizes() << " bytes " << checksum_hex(tensor_hash(d.labels, tensor_hash(d.images)));
  return os.str();
}

}  // namespace train
}  // namespace lowrank
