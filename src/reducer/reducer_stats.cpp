#include "lowrank/reducer/reducer_stats.h"

#include <c10/util/Exception.h>

#include <cstring>

namespace lowrank {
namespace {

constexpr int64_t kFields = 11;

int64_t bits_of(double x) {
  int64_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}
double double_of(int64_t b) {
  double x;
  std::memcpy(&x, &b, sizeof(x));
  return x;
}

}  // namespace

at::Tensor stats_to_tensor(const ReducerStats& s) {
  return at::tensor({s.steps, s.compressed_steps, s.bytes_sent, s.dense_bytes, s.compressed_bytes_sent,
                     s.compressed_dense_bytes, s.last_bytes_sent, s.skipped_steps, s.buckets_from_backward,
                     bits_of(s.relative_error), bits_of(s.ef_norm)},
                    at::kLong);
}

ReducerStats stats_from_tensor(const at::Tensor& t) {
  TORCH_CHECK(t.defined() && t.scalar_type() == at::kLong && t.dim() == 1 && t.numel() == kFields,
              "reducer statistics: expected an int64 tensor of ", kFields, " counters, got ",
              t.defined() ? t.toString() : std::string("undefined"), " of shape ",
              t.defined() ? t.sizes() : at::IntArrayRef{});
  const at::Tensor c = t.contiguous();
  const int64_t* v = c.data_ptr<int64_t>();
  ReducerStats s;
  s.steps = v[0];
  s.compressed_steps = v[1];
  s.bytes_sent = v[2];
  s.dense_bytes = v[3];
  s.compressed_bytes_sent = v[4];
  s.compressed_dense_bytes = v[5];
  s.last_bytes_sent = v[6];
  s.skipped_steps = v[7];
  s.buckets_from_backward = v[8];
  s.relative_error = double_of(v[9]);
  s.ef_norm = double_of(v[10]);
  s.floats_sent = s.bytes_sent / 4;
  s.dense_floats = s.dense_bytes / 4;
  s.compressed_floats_sent = s.compressed_bytes_sent / 4;
  s.compressed_dense_floats = s.compressed_dense_bytes / 4;
  s.last_floats_sent = s.last_bytes_sent / 4;
  return s;
}

}  // namespace lowrank
