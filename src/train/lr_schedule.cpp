#include "lowrank/train/lr_schedule.h"

#include <c10/util/Exception.h>
#include <torch/optim/optimizer.h>

#include <cmath>
#include <sstream>

#include "lowrank/util/choices.h"

namespace lowrank {
namespace train {

std::vector<std::string> lr_schedule_names() { return {"constant", "cosine"}; }

void check_lr_schedule_name(const std::string& name) { check_choice("lr schedule", name, lr_schedule_names()); }

double scheduled_lr(const std::string& name, double base, int64_t step, int64_t total, int64_t warmup) {
  check_lr_schedule_name(name);
  TORCH_CHECK(total >= 1 && step >= 0 && step < total, "scheduled_lr: step ", step, " is outside [0, ", total, ")");
  TORCH_CHECK(warmup >= 0, "scheduled_lr: warm-up steps must be >= 0, got ", warmup);
  if (step < warmup) return base * double(step + 1) / double(warmup);
  if (name == "constant") return base;
  const int64_t t = step - warmup, span = total - warmup;
  return base * 0.5 * (1.0 + std::cos(M_PI * double(t) / double(span)));
}

void set_lr(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

}  // namespace train
}  // namespace lowrank
