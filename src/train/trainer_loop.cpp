// Trainer::run(): the loop over train_step(), evaluate_and_log(), maybe_checkpoint() and finish(),
// and what each reports.
#include "lowrank/train/trainer.h"

#include <c10/util/Exception.h>
#include <torch/autograd.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/optimizer.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <sstream>

#include "lowrank/models/model_factory.h"
#include "lowrank/train/lr_schedule.h"
#include "lowrank/util/clock.h"

namespace lowrank {
namespace train {
namespace {

// Examples per forward pass when evaluating (no gradients, so memory is small).
constexpr int64_t kEvalBatch = 1000;

std::string megabytes(int64_t bytes) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(2) << double(bytes) / 1e6 << " MB";
  return os.str();
}

// Mean cross-entropy of logits [..., C] against targets [...] (every position of a sequence counts).
at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets, bool sum = false) {
  auto opts = torch::nn::functional::CrossEntropyFuncOptions();
  if (sum) opts.reduction(torch::kSum);
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), targets.reshape(-1), opts);
}

}  // namespace

TrainResult Trainer::run() {
  TrainResult res;
  res.steps_per_epoch = steps_per_epoch_;
  res.resumed_from_step = resumed_from_;
  const int64_t total = total_steps(), first_step = state_.step;
  run_ = RunMeters();
  run_.elapsed.reset(state_.elapsed_before);
  for (int64_t epoch = state_.step / steps_per_epoch_ + 1; epoch <= options_.epochs() && state_.step < total; ++epoch) {
    res.epochs = epoch;
    const at::Tensor rows = shard(train_.size(), options_.seed(), epoch - 1, comm_->rank(), comm_->size());
    for (int64_t b = state_.step % steps_per_epoch_; b < steps_per_epoch_ && state_.step < total; ++b) {
      const double lr = train_step(rows, b);
      evaluate_and_log(epoch, b + 1 == steps_per_epoch_ || state_.step == total, lr);
      const bool stop_now =
          options_.stop_after() > 0 && state_.step - first_step >= options_.stop_after() && state_.step < total;
      maybe_checkpoint(stop_now, &res);
      if (stop_now) {
        res.stopped_early = true;
        return finish(std::move(res));
      }
    }
  }
  return finish(std::move(res));
}

double Trainer::train_step(const at::Tensor& rows, int64_t batch_index) {
  if (hook_) hook_(state_.step);
  const auto t0 = Clock::now();
  const int64_t batch = options_.batch_size(), first = batch_index * batch, total = total_steps();
  const at::Tensor idx = rows.narrow(0, first, std::min(batch, rows.size(0) - first));
  const at::Tensor x = train_.batch_inputs(idx), y = train_.batch_targets(idx);
  const double lr = scheduled_lr(options_.lr_schedule(), options_.resolved_lr(), state_.step, total,
                                 options_.resolved_warmup_steps(total));
  set_lr(*optimizer_, lr);
  optimizer_->zero_grad();  // detach_() and zero_() in place: the gradients stay in the reducer's buckets
  const auto t_forward = Clock::now();
  at::Tensor loss = cross_entropy(model_->forward(x), y);
  std::string why_skipped;
  const double mean_loss = gather_loss(loss.item<double>(), &why_skipped);
  StepTimes times;
  if (why_skipped.empty()) {
    if (grad_hook_) grad_hook_(state_.step, *model_);
    loss.backward();  // with overlap on, buckets are compressed and sent from here on
    times.forward_backward = ms_since(t_forward);
    why_skipped = reduce_and_update(&times);
  }
  times.step = ms_since(t0);
  if (why_skipped.empty()) {
    run_.timings.add(times);
    state_.row_loss.add(mean_loss);
    state_.row_ms.add(times.step);
    run_.log_loss.add(mean_loss);
    run_.log_ms.add(times.step);
    state_.recent_loss.add(mean_loss);
  } else {
    skip_step(why_skipped);  // names the step as counted when it started
  }
  last_step_skipped_ = !why_skipped.empty();
  ++state_.step;
  return lr;
}

std::string Trainer::reduce_and_update(StepTimes* times) {
  const bool applied = reducer_->reduce();
  const auto t_optimizer = Clock::now();
  if (!applied) {
    std::ostringstream why;
    const auto& ranks = reducer_->last_nonfinite_ranks();
    why << "non-finite gradient on rank" << (ranks.size() > 1 ? "s" : "");
    for (size_t i = 0; i < ranks.size(); ++i) why << (i ? ", " : " ") << ranks[i];
    return why.str();
  }
  if (options_.clip_grad_norm() > 0) clip_gradients(options_.clip_grad_norm());
  optimizer_->step();
  const auto& st = reducer_->stats();
  times->wait = 1e3 * st.last_wait_seconds;
  times->compress = 1e3 * st.last_compress_seconds;
  times->collective = 1e3 * st.last_comm_seconds;
  times->optimizer = ms_since(t_optimizer);
  return "";
}

// A skipped step: nothing was reduced or updated on any rank; the batch is consumed.
void Trainer::skip_step(const std::string& why) {
  const int64_t skipped = ++state_.skipped_steps;
  if (log_)
    *log_ << "step " << state_.step << " skipped: " << why << " (" << skipped << " skipped so far)" << std::endl;
  const int64_t limit = options_.max_skipped_steps();
  TORCH_CHECK(limit < 0 || skipped <= limit, "step ", state_.step, ": ", why, "; ", skipped,
              " steps skipped, more than --max-skipped-steps ", limit, "; every rank stopped (hint: lower --lr, "
              "currently ", options_.resolved_lr(), ", or add warm-up steps)");
}

void Trainer::evaluate_and_log(int64_t epoch, bool epoch_end, double lr) {
  const int64_t step = state_.step;
  const bool eval_now = epoch_end || (options_.eval_every() > 0 && step % options_.eval_every() == 0);
  Evaluation e;
  if (eval_now) {
    if (run_.log_loss.count() > 0) log_progress(epoch);
    e = evaluate();
    state_.test_accuracy = e.accuracy;
    state_.test_loss = e.loss;
    if (epoch_end) state_.epoch_accuracy.push_back(e.accuracy);
    log_evaluation(epoch, epoch_end, e);
  } else if (run_.since_log.value() >= options_.log_every()) {
    log_progress(epoch);
  }
  if (metrics_ && (eval_now || step % options_.metrics_every() == 0)) write_metrics_row(epoch, lr, e);
}

void Trainer::log_progress(int64_t epoch) {
  if (!log_) return;
  const auto& st = reducer_->stats();
  const int64_t skipped = state_.skipped_steps;
  *log_ << "step " << state_.step << "/" << total_steps() << "  epoch " << epoch << "/" << options_.epochs()
        << "  loss " << std::fixed << std::setprecision(4) << run_.log_loss.value(0.0) << "  "
        << std::setprecision(1) << run_.log_ms.value(0.0) << " ms/step  sent " << megabytes(st.bytes_sent)
        << "  ratio " << std::setprecision(1) << st.compression_ratio() << "x"
        << (skipped > 0 ? "  skipped " + std::to_string(skipped) : std::string()) << std::defaultfloat << std::endl;
  run_.log_loss.reset();
  run_.log_ms.reset();
  run_.since_log.reset();
}

void Trainer::log_evaluation(int64_t epoch, bool epoch_end, const Evaluation& e) {
  if (!log_) return;
  if (epoch_end)
    *log_ << "epoch " << epoch << "/" << options_.epochs() << " done at step " << state_.step << ": ";
  else
    *log_ << "step " << state_.step << "/" << total_steps() << " evaluation: ";
  *log_ << std::fixed << std::setprecision(4);
  if (options_.language_model())
    *log_ << "val loss " << e.loss << "  val perplexity " << std::setprecision(2) << std::exp(e.loss)
          << "  next-token accuracy " << std::setprecision(4) << e.accuracy;
  else
    *log_ << "test accuracy " << e.accuracy << "  test loss " << e.loss;
  *log_ << "  elapsed " << std::setprecision(1) << run_.elapsed.value() << " s" << std::defaultfloat << std::endl;
}

void Trainer::write_metrics_row(int64_t epoch, double lr, const Evaluation& e) {
  const auto& st = reducer_->stats();
  MetricsRow row;
  row.step = state_.step;
  row.epoch = epoch;
  row.train_loss = state_.row_loss.value(std::nan(""));
  row.lr = lr;
  row.step_ms = state_.row_ms.value(0.0);
  row.bytes_sent = st.bytes_sent;
  row.dense_bytes = st.dense_bytes;
  row.compression_ratio = st.compression_ratio();
  row.relative_error = st.relative_error;
  row.ef_norm = st.ef_norm;
  row.test_accuracy = e.accuracy;
  row.val_loss = e.loss;
  row.val_perplexity = options_.language_model() && e.loss >= 0 ? std::exp(e.loss) : -1;
  row.skipped_steps = state_.skipped_steps;
  row.mean_rank = reducer_->mean_rank();
  row.elapsed_s = run_.elapsed.value();
  metrics_->write(row);
  state_.row_loss.reset();
  state_.row_ms.reset();
}

void Trainer::maybe_checkpoint(bool stop_now, TrainResult* res) {
  if (checkpoint_root().empty()) return;
  const int64_t every = options_.checkpoint_every();
  if (!stop_now && state_.step != total_steps() && !(every > 0 && state_.step % every == 0)) return;
  state_.elapsed_before = run_.elapsed.value();
  res->last_checkpoint = save_checkpoint();
  if (log_) *log_ << "checkpoint: step " << state_.step << " -> " << res->last_checkpoint << std::endl;
}

TrainResult Trainer::finish(TrainResult res) {
  res.steps = state_.step;
  res.skipped_steps = state_.skipped_steps;
  res.test_accuracy = state_.test_accuracy;
  res.test_loss = state_.test_loss;
  res.epoch_test_accuracy = state_.epoch_accuracy;
  res.language_model = options_.language_model();
  if (res.language_model) {
    res.val_perplexity = std::exp(state_.test_loss);
    res.vocab_size = train_.classes;
    res.tokenizer = train_.tokenizer;
  }
  res.parameters = models::parameter_count(*model_);
  if (res.epochs == 0)
    res.epochs = std::min(options_.epochs(), (state_.step + steps_per_epoch_ - 1) / steps_per_epoch_);
  // The last step was skipped (a non-finite loss or gradient): the mean of earlier steps would
  // pass for the model's loss, so none is reported.
  res.final_train_loss = last_step_skipped_ ? std::nan("") : state_.recent_loss.value(0.0);
  const StepTimes medians = run_.timings.medians();
  res.step_ms_median = medians.step;
  res.forward_backward_ms = medians.forward_backward;
  res.communicate_ms = medians.wait;
  res.compress_ms = medians.compress;
  res.collective_ms = medians.collective;
  res.optimizer_ms = medians.optimizer;
  if (reducer_->compressor().traits().communicates) {
    res.weights_checksum = check_weights(&res.rank_checksums);
  } else {
    res.weights_checksum = weights_checksum(*model_);  // noop: ranks drift apart by design
    res.weights_agree = false;
  }
  res.weights_sha256 = weights_sha256(*model_);
  res.reducer = reducer_->stats();
  res.buckets_per_step = static_cast<int64_t>(reducer_->bucket_count());
  res.ranks = reducer_->ranks();
  res.overlap = reducer_->overlapping();
  res.reducer_description = reducer_->describe();
  res.wall_seconds = run_.elapsed.value();
  return res;
}

Trainer::Evaluation Trainer::evaluate() {
  torch::NoGradGuard no_grad;
  model_->eval();
  const int64_t all = test_.size();
  const int64_t n = options_.eval_examples() > 0 ? std::min(all, options_.eval_examples()) : all;
  const int64_t w = comm_->size(), r = comm_->rank();
  const int64_t lo = n * r / w, hi = n * (r + 1) / w;
  // Token windows: a batch of windows whose logits stay near 16 M floats.
  const int64_t eval_batch =
      test_.is_tokens() ? std::max<int64_t>(1, (16 << 20) / (test_.sequence_length() * test_.classes)) : kEvalBatch;
  double correct = 0, loss_sum = 0, count = 0;
  for (int64_t b = lo; b < hi; b += eval_batch) {
    at::Tensor idx = at::arange(b, std::min(hi, b + eval_batch), at::kLong);
    at::Tensor logits = model_->forward(test_.batch_inputs(idx));
    at::Tensor y = test_.batch_targets(idx);
    loss_sum += cross_entropy(logits, y, /*sum=*/true).item<double>();
    correct += logits.argmax(-1).eq(y).sum().item<double>();
    count += double(y.numel());
  }
  model_->train();
  at::Tensor totals = at::tensor({correct, loss_sum, count}, at::kDouble);
  comm_->all_reduce_(totals);
  const double total = totals[2].item<double>();
  Evaluation e;
  e.accuracy = totals[0].item<double>() / total;
  e.loss = totals[1].item<double>() / total;
  return e;
}

void Trainer::clip_gradients(double max_norm) {
  torch::NoGradGuard no_grad;
  torch::nn::utils::clip_grad_norm_(model_->parameters(), max_norm);
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

}  // namespace train
}  // namespace lowrank
