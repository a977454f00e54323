#include "test_hooks.h"

#include <c10/util/Exception.h>
#include <signal.h>

#include <cmath>
#include <iostream>
#include <memory>

#include "lowrank/launch/worker_env.h"

namespace lowrank {
namespace launch {
namespace {

constexpr const char* kFailRankEnv = "LOWRANK_TEST_FAIL_RANK";
constexpr const char* kFailStepEnv = "LOWRANK_TEST_FAIL_STEP";
constexpr const char* kKillRankEnv = "LOWRANK_TEST_KILL_RANK";
constexpr const char* kKillStepEnv = "LOWRANK_TEST_KILL_STEP";
constexpr const char* kHangRankEnv = "LOWRANK_TEST_HANG_RANK";
constexpr const char* kHangStepEnv = "LOWRANK_TEST_HANG_STEP";
constexpr const char* kNanRankEnv = "LOWRANK_TEST_NAN_RANK";
constexpr const char* kNanStepEnv = "LOWRANK_TEST_NAN_STEP";
constexpr const char* kFailOutputsRankEnv = "LOWRANK_TEST_FAIL_OUTPUTS_RANK";

void install_fail_hook(train::Trainer& trainer, int fail_rank) {
  const int fail_step = env_int(kFailStepEnv, 0);
  trainer.set_step_hook([fail_rank, fail_step](int64_t step) {
    TORCH_CHECK(step != fail_step, "injected failure at step ", step, " (", kFailRankEnv, "=", fail_rank, ")");
  });
}

void install_kill_hook(train::Trainer& trainer) {
  const int kill_step = env_int(kKillStepEnv, 0);
  trainer.set_step_hook([kill_step](int64_t step) {
    if (step == kill_step) ::raise(SIGKILL);
  });
}

void install_hang_hook(train::Trainer& trainer) {
  const int hang_step = env_int(kHangStepEnv, 0);
  trainer.set_step_hook([hang_step](int64_t step) {
    if (step != hang_step) return;
    std::cerr << "lowrank test hook: stopping (SIGSTOP) at step " << step << std::endl;
    ::raise(SIGSTOP);  // stops answering, as a hung process would
  });
}

// A NaN in the first parameter's gradient after backward() at the step, through a tensor hook
// registered for that step only.
void install_nan_hook(train::Trainer& trainer) {
  const int nan_step = env_int(kNanStepEnv, 0);
  auto hook = std::make_shared<int64_t>(-1);  // the tensor hook's handle while one is registered
  trainer.set_grad_hook([nan_step, hook](int64_t step, torch::nn::Module& model) {
    at::Tensor first = model.parameters().front();
    if (*hook >= 0) {
      first.remove_hook(static_cast<unsigned>(*hook));
      *hook = -1;
    }
    if (step != nan_step) return;
    *hook = first.register_hook([](const at::Tensor& g) {
      at::Tensor bad = g.clone();
      bad.view(-1)[0] = std::nan("");
      return bad;
    });
  });
}

}  // namespace

void install_test_hooks(train::Trainer& trainer, int rank) {
  // (Each step hook replaces the one before: one per rank is the intent.)
  const int fail_rank = env_int(kFailRankEnv, -1);
  if (fail_rank == rank) install_fail_hook(trainer, fail_rank);
  if (env_int(kKillRankEnv, -1) == rank) install_kill_hook(trainer);
  if (env_int(kHangRankEnv, -1) == rank) install_hang_hook(trainer);
  if (env_int(kNanRankEnv, -1) == rank) install_nan_hook(trainer);
}

int fail_outputs_rank() { return env_int(kFailOutputsRankEnv, -1); }

void fail_outputs_if(int fail_rank, int rank) {
  TORCH_CHECK(fail_rank != rank, "injected failure writing the outputs (", kFailOutputsRankEnv, "=", fail_rank, ")");
}

}  // namespace launch
}  // namespace lowrank
