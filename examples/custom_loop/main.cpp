// A custom LibTorch training loop that averages gradients with lowrank's PowerSGD reducer.
// Each rank fits its own shard of a synthetic regression task; GradientReducer::reduce() sits
// between backward() and optimizer.step(). Launch with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
// (torchrun-style). Exits non-zero if the loss did not fall or the ranks' weights differ.
#include <torch/torch.h>

#include <cstdio>
#include <exception>
#include <stdexcept>

#include "lowrank/comm/launch_env.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/reducer/gradient_reducer.h"

int main() try {
  lowrank::comm::CommOptions comm_options;
  comm_options.timeout = std::chrono::seconds(60);  // a lost peer fails the run instead of hanging it
  std::shared_ptr<lowrank::comm::Communicator> comm = lowrank::comm::make_communicator_from_env(comm_options);
  const int rank = comm->rank();

  torch::manual_seed(0);  // same initial weights and target map on every rank
  torch::nn::Sequential model(torch::nn::Linear(32, 64), torch::nn::Tanh(), torch::nn::Linear(64, 8));
  const torch::Tensor A = torch::randn({32, 8}) / 4;
  torch::manual_seed(1000 + rank);  // this rank's own shard of the data
  const torch::Tensor x = torch::randn({256, 32});
  const torch::Tensor y = torch::tanh(x.mm(A)) + 0.01 * torch::randn({256, 8});

  std::vector<std::pair<std::string, at::Tensor>> params;
  for (const auto& p : model->named_parameters()) params.emplace_back(p.key(), p.value());
  lowrank::GradientReducer reducer(params, lowrank::make_compressor("powersgd", {{"rank", "2"}}), comm,
                                   lowrank::ReducerOptions().start_iter(10));
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));

  double first_loss = 0, last_loss = 0;
  const int kSteps = 150;
  for (int step = 0; step < kSteps; ++step) {
    optimizer.zero_grad();
    torch::Tensor loss = torch::mse_loss(model->forward(x), y);
    loss.backward();
    // Every p.grad() now holds the same compressed average on all ranks; false (on every rank)
    // when some rank's gradient held a NaN/Inf: nothing was reduced, skip the update.
    if (reducer.reduce()) optimizer.step();
    torch::Tensor mean_loss = loss.detach().reshape({1}).clone();
    comm->all_reduce_mean_(mean_loss);
    last_loss = mean_loss.item<double>();
    if (step == 0) first_loss = last_loss;
    if (rank == 0 && step % 30 == 0) std::printf("step %3d  loss %.5f\n", step, last_loss);
  }

  // Checksum of the final weights (sum and position-weighted sum, fp64), gathered from all ranks.
  std::vector<torch::Tensor> flat;
  for (const auto& p : model->parameters()) flat.push_back(p.detach().reshape({-1}).to(torch::kDouble));
  const torch::Tensor w = torch::cat(flat);
  const torch::Tensor checksum = torch::stack({w.sum(), (w * torch::arange(1, w.numel() + 1, torch::kDouble)).sum()});
  const auto all = comm->all_gather(checksum);
  bool same = true;
  for (const auto& c : all) same = same && torch::equal(c, all[0]);
  if (rank == 0)
    std::printf("loss %.5f -> %.5f, compression ratio %.2f, weights %s on %zu ranks\n", first_loss, last_loss,
                reducer.stats().compression_ratio(), same ? "identical" : "DIFFER", all.size());
  if (!same) throw std::runtime_error("final weights differ across ranks");
  if (!(last_loss < 0.5 * first_loss)) throw std::runtime_error("the loss did not decrease by half");
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "custom_loop: %s\n", e.what());
  return 1;
}
