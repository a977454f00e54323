#include "lowrank/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/optimizer.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <algorithm>
#include <deque>
#include <iomanip>
#include <sstream>

#include "lowrank/compressors/shared_random.h"
#include "lowrank/train/lr_schedule.h"
#include "lowrank/train/optimizer_factory.h"
#include "models/model_factory.h"

namespace lowrank {
namespace train {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Examples per forward pass when evaluating (no gradients, so memory is small).
constexpr int64_t kEvalBatch = 1000;
// Seed domains: the weights and the per-epoch shuffle draw from unrelated streams of one seed.
constexpr uint64_t kInitDomain = 0x1001;
constexpr uint64_t kShuffleDomain = 0x2002;

std::string megabytes(int64_t floats) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(2) << 4.0 * double(floats) / 1e6 << " MB";
  return os.str();
}

}  // namespace

uint64_t weights_checksum(const torch::nn::Module& module) {
  uint64_t h = 1469598103934665603ULL;
  for (const auto& p : module.parameters()) {
    at::Tensor t = p.detach().contiguous();
    const auto* b = static_cast<const unsigned char*>(t.data_ptr());
    for (size_t i = 0; i < t.nbytes(); ++i) h = (h ^ b[i]) * 1099511628211ULL;
  }
  return h;
}

std::string checksum_hex(uint64_t checksum) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%016llx", static_cast<unsigned long long>(checksum));
  return buf;
}

at::Tensor Trainer::shard(int64_t n, uint64_t seed, int64_t epoch, int rank, int world) {
  TORCH_CHECK(world >= 1 && rank >= 0 && rank < world, "shard: rank ", rank, " outside [0, ", world, ")");
  const int64_t per_rank = n / world;
  TORCH_CHECK(per_rank >= 1, "the training set has ", n, " examples, fewer than the ", world, " workers");
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(
      splitmix64(splitmix64(splitmix64(seed) ^ kShuffleDomain) ^ static_cast<uint64_t>(epoch)));
  at::Tensor perm = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong));
  return perm.narrow(0, rank * per_rank, per_rank).clone();
}

Trainer::Trainer(TrainOptions options, data::Dataset train_set, data::Dataset test_set,
                 std::shared_ptr<comm::Communicator> comm)
    : options_(std::move(options)), train_(std::move(train_set)), test_(std::move(test_set)), comm_(std::move(comm)) {
  TORCH_CHECK(comm_, "Trainer: communicator is null");
  options_.validate();
  train_.validate();
  test_.validate();
  TORCH_CHECK(train_.images.sizes().slice(1) == test_.images.sizes().slice(1) && train_.classes == test_.classes,
              "Trainer: training examples ", train_.images.sizes().slice(1), " (", train_.classes,
              " classes) and test examples ", test_.images.sizes().slice(1), " (", test_.classes,
              " classes) differ in shape");
  const int64_t per_rank = train_.size() / comm_->size();
  TORCH_CHECK(per_rank >= 1, "the training set '", train_.name, "' has ", train_.size(), " examples, fewer than the ",
              comm_->size(), " workers");
  steps_per_epoch_ = (per_rank + options_.batch_size() - 1) / options_.batch_size();

  models::InputSpec spec;
  spec.channels = train_.images.size(1);
  spec.height = train_.images.size(2);
  spec.width = train_.images.size(3);
  spec.classes = train_.classes;
  model_ = models::make_model(options_.model(), spec, splitmix64(splitmix64(options_.seed()) ^ kInitDomain));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model_->parameters()) comm_->broadcast_(p.data(), 0);
  }
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& kv : model_->named_parameters()) named.emplace_back(kv.key(), kv.value());
  reducer_ = std::make_unique<GradientReducer>(named, options_.make_compressor(), comm_, options_.resolved_reducer());
  optimizer_ = make_optimizer(options_.optimizer(), model_->parameters(), options_.resolved_lr(), options_.momentum(),
                              options_.weight_decay());
}

Trainer::~Trainer() = default;

int64_t Trainer::total_steps() const {
  const int64_t all = options_.epochs() * steps_per_epoch_;
  return options_.steps() > 0 ? std::min(all, options_.steps()) : all;
}

double Trainer::gather_loss(double local, int64_t step, int64_t epoch) {
  auto all = comm_->all_gather(at::full({1}, local, at::kDouble));
  double sum = 0;
  bool finite = true;
  std::ostringstream per_rank;
  for (size_t r = 0; r < all.size(); ++r) {
    const double v = all[r].item<double>();
    finite = finite && std::isfinite(v);
    sum += v;
    per_rank << (r ? ", " : "") << "rank " << r << ": " << v;
  }
  TORCH_CHECK(finite, "non-finite training loss at step ", step, " (epoch ", epoch, "): ", per_rank.str(),
              "; every rank stopped (hint: lower --lr, currently ", options_.resolved_lr(), ")");
  return sum / double(all.size());
}

std::pair<double, double> Trainer::evaluate() {
  torch::NoGradGuard no_grad;
  model_->eval();
  const int64_t all = test_.size();
  const int64_t n = options_.eval_examples() > 0 ? std::min(all, options_.eval_examples()) : all;
  const int64_t w = comm_->size(), r = comm_->rank();
  const int64_t lo = n * r / w, hi = n * (r + 1) / w;
  double correct = 0, loss_sum = 0;
  for (int64_t b = lo; b < hi; b += kEvalBatch) {
    at::Tensor idx = at::arange(b, std::min(hi, b + kEvalBatch), at::kLong);
    at::Tensor logits = model_->forward(test_.batch_images(idx));
    at::Tensor y = test_.batch_labels(idx);
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    correct += logits.argmax(1).eq(y).sum().item<double>();
  }
  model_->train();
  at::Tensor totals = at::tensor({correct, loss_sum}, at::kDouble);
  comm_->all_reduce_(totals);
  return {totals[0].item<double>() / double(n), totals[1].item<double>() / double(n)};
}

uint64_t Trainer::check_weights(std::vector<uint64_t>* all_out) {
  const uint64_t mine = weights_checksum(*model_);
  auto all = comm_->all_gather(at::full({1}, static_cast<int64_t>(mine), at::kLong));
  bool same = true;
  std::ostringstream listing;
  for (size_t r = 0; r < all.size(); ++r) {
    const auto v = static_cast<uint64_t>(all[r].item<int64_t>());
    all_out->push_back(v);
    same = same && v == mine;
    listing << (r ? ", " : "") << "rank " << r << ": " << checksum_hex(v);
  }
  TORCH_CHECK(same, "rank ", comm_->rank(), ": the weights differ across ranks after training (", listing.str(),
              "); the reducer must give every rank the same gradient");
  return mine;
}

TrainResult Trainer::run() {
  TrainResult res;
  res.steps_per_epoch = steps_per_epoch_;
  const int64_t total = total_steps();
  const int64_t batch = options_.batch_size();
  const auto t_start = Clock::now();
  auto last_log = t_start;
  std::deque<double> recent;  // the last metrics_every mean losses
  struct {
    std::vector<double> step, forward_backward, wait, compress, collective, optimizer;
  } timing;
  double row_loss = 0, row_ms = 0, log_loss = 0, log_ms = 0;
  int64_t row_n = 0, log_n = 0, step = 0;

  auto progress = [&](int64_t epoch) {
    if (!log_) return;
    const auto& st = reducer_->stats();
    *log_ << "step " << step << "/" << total << "  epoch " << epoch << "/" << options_.epochs() << "  loss "
          << std::fixed << std::setprecision(4) << log_loss / std::max<int64_t>(log_n, 1) << "  "
          << std::setprecision(1) << log_ms / std::max<int64_t>(log_n, 1) << " ms/step  sent "
          << megabytes(st.floats_sent) << "  ratio " << std::setprecision(1) << st.compression_ratio() << "x"
          << std::defaultfloat << std::endl;
    log_loss = log_ms = 0;
    log_n = 0;
    last_log = Clock::now();
  };

  for (int64_t epoch = 1; epoch <= options_.epochs() && step < total; ++epoch) {
    res.epochs = epoch;
    at::Tensor rows = shard(train_.size(), options_.seed(), epoch - 1, comm_->rank(), comm_->size());
    const int64_t per_rank = rows.size(0);
    for (int64_t b = 0; b < steps_per_epoch_ && step < total; ++b) {
      if (hook_) hook_(step);
      const auto t0 = Clock::now();
      at::Tensor idx = rows.narrow(0, b * batch, std::min(batch, per_rank - b * batch));
      at::Tensor x = train_.batch_images(idx), y = train_.batch_labels(idx);
      const double lr = scheduled_lr(options_.lr_schedule(), options_.resolved_lr(), step, total);
      set_lr(*optimizer_, lr);
      optimizer_->zero_grad();  // detach_() and zero_() in place: the gradients stay in the reducer's buckets
      const auto t_fb = Clock::now();
      at::Tensor loss = torch::nn::functional::cross_entropy(model_->forward(x), y);
      const double mean_loss = gather_loss(loss.item<double>(), step, epoch);
      loss.backward();  // with overlap on, buckets are compressed and sent from here on
      const auto t_reduce = Clock::now();
      reducer_->reduce();
      const auto t_opt = Clock::now();
      optimizer_->step();
      const double ms = 1e3 * seconds_since(t0);
      {
        const auto& st = reducer_->stats();
        timing.step.push_back(ms);
        timing.forward_backward.push_back(1e3 * std::chrono::duration<double>(t_reduce - t_fb).count());
        timing.wait.push_back(1e3 * st.last_wait_seconds);
        timing.compress.push_back(1e3 * st.last_compress_seconds);
        timing.collective.push_back(1e3 * st.last_comm_seconds);
        timing.optimizer.push_back(1e3 * seconds_since(t_opt));
      }
      ++step;
      row_loss += mean_loss;
      row_ms += ms;
      ++row_n;
      log_loss += mean_loss;
      log_ms += ms;
      ++log_n;
      recent.push_back(mean_loss);
      if (static_cast<int64_t>(recent.size()) > options_.metrics_every()) recent.pop_front();

      const bool epoch_end = b + 1 == steps_per_epoch_ || step == total;
      double accuracy = -1;
      if (epoch_end) {
        if (log_n > 0) progress(epoch);
        auto acc_loss = evaluate();
        accuracy = acc_loss.first;
        res.test_accuracy = acc_loss.first;
        res.test_loss = acc_loss.second;
        res.epoch_test_accuracy.push_back(accuracy);
        if (log_)
          *log_ << "epoch " << epoch << "/" << options_.epochs() << " done at step " << step << ": test accuracy "
                << std::fixed << std::setprecision(4) << acc_loss.first << "  test loss " << acc_loss.second
                << "  elapsed " << std::setprecision(1) << seconds_since(t_start) << " s" << std::defaultfloat
                << std::endl;
      } else if (seconds_since(last_log) >= options_.log_every()) {
        progress(epoch);
      }
      if (metrics_ && (epoch_end || step % options_.metrics_every() == 0)) {
        const auto& st = reducer_->stats();
        MetricsRow row;
        row.step = step;
        row.epoch = epoch;
        row.train_loss = row_loss / double(row_n);
        row.lr = lr;
        row.step_ms = row_ms / double(row_n);
        row.floats_sent = st.floats_sent;
        row.dense_floats = st.dense_floats;
        row.compression_ratio = st.compression_ratio();
        row.relative_error = st.relative_error;
        row.ef_norm = st.ef_norm;
        row.test_accuracy = accuracy;
        row.elapsed_s = seconds_since(t_start);
        metrics_->write(row);
        row_loss = row_ms = 0;
        row_n = 0;
      }
    }
  }

  res.steps = step;
  double tail = 0;
  for (double l : recent) tail += l;
  res.final_train_loss = recent.empty() ? 0.0 : tail / double(recent.size());
  // The first step pays one-off costs (allocation, warm-start draws, thread start): leave it out
  // of the medians when there are others.
  auto median = [](std::vector<double> v) {
    if (v.size() > 1) v.erase(v.begin());
    if (v.empty()) return 0.0;
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  };
  res.step_ms_median = median(timing.step);
  res.forward_backward_ms = median(timing.forward_backward);
  res.communicate_ms = median(timing.wait);
  res.compress_ms = median(timing.compress);
  res.collective_ms = median(timing.collective);
  res.optimizer_ms = median(timing.optimizer);
  if (reducer_->compressor().communicates()) {
    res.weights_checksum = check_weights(&res.rank_checksums);
  } else {
    res.weights_checksum = weights_checksum(*model_);  // noop: ranks drift apart by design
    res.weights_agree = false;
  }
  res.reducer = reducer_->stats();
  res.reducer_description = reducer_->describe();
  res.wall_seconds = seconds_since(t_start);
  return res;
}

}  // namespace train
}  // namespace lowrank
