#include "lowrank/train/loop_state.h"

#include <c10/util/Exception.h>

#include <cmath>

namespace lowrank {
namespace train {
namespace {

// One encode and one decode per field type of LoopState::fields(); the tensor types are the
// checkpoint format's (loop_state.h).
using Meters = std::tuple<AverageMeter&, AverageMeter&>;
using ConstMeters = std::tuple<const AverageMeter&, const AverageMeter&>;
using Doubles3 = std::tuple<double&, double&, double&>;
using ConstDoubles3 = std::tuple<const double&, const double&, const double&>;

at::Tensor encode(int64_t v) { return at::tensor({v}, at::kLong); }
at::Tensor encode(const std::vector<double>& v) { return at::tensor(v, at::kDouble); }
at::Tensor encode(const WindowMeter& w) { return at::tensor(w.values(), at::kDouble); }
at::Tensor encode(const ConstMeters& m) {
  const AverageMeter &loss = std::get<0>(m), &ms = std::get<1>(m);
  return at::tensor({loss.sum(), ms.sum(), double(loss.count())}, at::kDouble);
}
at::Tensor encode(const ConstDoubles3& d) {
  return at::tensor({std::get<0>(d), std::get<1>(d), std::get<2>(d)}, at::kDouble);
}

// `t` as `numel` values of `type` (numel < 0: any count), contiguous.
at::Tensor checked(const at::Tensor& t, at::ScalarType type, int64_t numel, const char* key, const std::string& where) {
  TORCH_CHECK(t.scalar_type() == type && t.dim() == 1 && (numel < 0 || t.numel() == numel), where, ": '", key,
              "' is ", t.sizes(), " ", t.scalar_type(), ", expected [", numel < 0 ? "n" : std::to_string(numel),
              "] ", type);
  return t.contiguous();
}

std::vector<double> doubles(const at::Tensor& t, int64_t numel, const char* key, const std::string& where) {
  const at::Tensor c = checked(t, at::kDouble, numel, key, where);
  const double* p = c.data_ptr<double>();
  return std::vector<double>(p, p + c.numel());
}

void decode(const at::Tensor& t, const char* key, const std::string& where, int64_t& v) {
  v = checked(t, at::kLong, 1, key, where).item<int64_t>();
}
void decode(const at::Tensor& t, const char* key, const std::string& where, std::vector<double>& v) {
  v = doubles(t, -1, key, where);
}
void decode(const at::Tensor& t, const char* key, const std::string& where, WindowMeter& w) {
  w.assign(doubles(t, -1, key, where));
}
void decode(const at::Tensor& t, const char* key, const std::string& where, Meters m) {
  const auto v = doubles(t, 3, key, where);
  // A count is a whole number of steps; 2^53 bounds what a double holds exactly.
  TORCH_CHECK(v[2] >= 0 && v[2] <= 9007199254740992.0 && v[2] == std::floor(v[2]), where, ": '", key,
              "' holds a count of ", v[2], ", not a whole number >= 0");
  const auto count = static_cast<int64_t>(v[2]);
  std::get<0>(m) = AverageMeter(v[0], count);
  std::get<1>(m) = AverageMeter(v[1], count);
}
void decode(const at::Tensor& t, const char* key, const std::string& where, Doubles3 d) {
  const auto v = doubles(t, 3, key, where);
  d = std::tie(v[0], v[1], v[2]);
}

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> LoopState::state_dict() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  fields(*this, [&out](const char* key, const auto& field) { out.emplace_back(key, encode(field)); });
  return out;
}

void LoopState::load_state_dict(const std::function<at::Tensor(const std::string& key)>& get,
                                const std::string& where) {
  LoopState loaded(recent_loss.capacity());
  fields(loaded, [&](const char* key, auto&& field) { decode(get(key), key, where, field); });
  *this = std::move(loaded);
}

}  // namespace train
}  // namespace lowrank
