#pragma once
// Learning-rate schedules of `lowrank train`, applied to the optimizer before every step.
//
//   constant  lr(t) = base
//   cosine    lr(t) = base · ½(1 + cos(π·t/T)), t = 0 … T−1 for a run of T steps (t = 0 uses base)
// With W warm-up steps (--warmup-steps, as the language-model papers train), steps t < W use
// base·(t+1)/W, a linear ramp, and the schedule then runs over the remaining T − W steps:
// lr(t) = schedule(t − W of T − W).
//
// Cosine decay to (almost) zero makes the final weights, and so the reported test accuracy, a
// settled value rather than one noisy iterate at full step size; that matters when runs that
// differ only in their compressor are compared by their final accuracy.
#include <string>
#include <vector>

namespace torch {
namespace optim {
class Optimizer;
}
}  // namespace torch

namespace lowrank {
namespace train {

std::vector<std::string> lr_schedule_names();
/// Throws listing the valid names when `name` is not registered.
void check_lr_schedule_name(const std::string& name);
/// The learning rate of 0-based step `step` of `total` steps, after `warmup` warm-up steps.
double scheduled_lr(const std::string& name, double base, int64_t step, int64_t total, int64_t warmup = 0);
/// Sets the learning rate of every parameter group of `optimizer`.
void set_lr(torch::optim::Optimizer& optimizer, double lr);

}  // namespace train
}  // namespace lowrank
