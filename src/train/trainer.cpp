#include "lowrank/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/version.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <deque>
#include <map>
#include <iomanip>
#include <sstream>

#include "lowrank/compressors/shared_random.h"
#include "lowrank/reducer/agreement.h"
#include "lowrank/train/blas_info.h"
#include "lowrank/train/checkpoint.h"
#include "lowrank/train/sha256.h"
#include "lowrank/train/lr_schedule.h"
#include "lowrank/train/optimizer_factory.h"
#include "lowrank/models/model_factory.h"

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

// Mean cross-entropy of logits [..., C] against targets [...] (every position of a sequence counts).
at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets, bool sum = false) {
  auto opts = torch::nn::functional::CrossEntropyFuncOptions();
  if (sum) opts.reduction(torch::kSum);
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), targets.reshape(-1), opts);
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

namespace {

// 64-bit FNV-1a over the bytes of a tensor taken eight at a time (the tail byte by byte): every byte
// and its position count, at memory speed (Fashion-MNIST's 188 MB of pixels in well under 0.1 s).
uint64_t tensor_hash(const at::Tensor& tensor, uint64_t h = 1469598103934665603ULL) {
  const at::Tensor t = tensor.contiguous();
  const auto* b = static_cast<const unsigned char*>(t.data_ptr());
  const size_t n = t.nbytes(), words = n / 8;
  for (size_t i = 0; i < words; ++i) {
    uint64_t w;
    std::memcpy(&w, b + 8 * i, 8);
    h = (h ^ w) * 1099511628211ULL;
  }
  for (size_t i = 8 * words; i < n; ++i) h = (h ^ b[i]) * 1099511628211ULL;
  return h;
}

// Fingerprint of a dataset: its name, shape and a hash of every byte of its examples and labels
// (of its tokens for text), so that other data under the same name, even with two pixels swapped,
// is told apart.
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

}  // namespace

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
  TORCH_CHECK(train_.is_tokens() == options_.language_model() && test_.is_tokens() == options_.language_model(),
              "Trainer: model ", options_.model(), " needs ", options_.language_model() ? "token" : "image",
              " data, got '", train_.name, "' and '", test_.name, "'");
  const at::Tensor& train_x = train_.is_tokens() ? train_.tokens : train_.images;
  const at::Tensor& test_x = test_.is_tokens() ? test_.tokens : test_.images;
  TORCH_CHECK(train_x.sizes().slice(1) == test_x.sizes().slice(1) && train_.classes == test_.classes,
              "Trainer: training examples ", train_x.sizes().slice(1), " (", train_.classes,
              " classes) and test examples ", test_x.sizes().slice(1), " (", test_.classes,
              " classes) differ in shape");
  const int64_t per_rank = train_.size() / comm_->size();
  TORCH_CHECK(per_rank >= 1, "the training set '", train_.name, "' has ", train_.size(), " examples, fewer than the ",
              comm_->size(), " workers");
  steps_per_epoch_ = (per_rank + options_.batch_size() - 1) / options_.batch_size();
  train_fingerprint_ = data_fingerprint(train_);
  test_fingerprint_ = data_fingerprint(test_);
  // Fixed once: a step-* directory resumed from may be pruned later, and its parent must stay the root.
  checkpoint_root_ = !options_.checkpoint_dir().empty() ? options_.checkpoint_dir()
                                                         : checkpoint_root_of(options_.resume());
  check_startup_agreement();

  models::InputSpec spec;
  if (train_.is_tokens()) {
    spec.sequence_length = train_.sequence_length();
  } else {
    spec.channels = train_.images.size(1);
    spec.height = train_.images.size(2);
    spec.width = train_.images.size(3);
  }
  spec.classes = train_.classes;
  model_ = models::make_model(options_.model(), spec, splitmix64(splitmix64(options_.seed()) ^ kInitDomain),
                              options_.model_size());
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model_->parameters()) comm_->broadcast_(p.data(), 0);
  }
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& kv : model_->named_parameters()) named.emplace_back(kv.key(), kv.value());
  reducer_ = std::make_unique<GradientReducer>(named, options_.make_compressor(), comm_, options_.resolved_reducer());
  const auto unmatched = reducer_->unmatched_uncompressed_names();
  if (!unmatched.empty()) {
    std::ostringstream names;
    for (size_t i = 0; i < named.size(); ++i) names << (i ? ", " : "") << named[i].first;
    TORCH_CHECK(false, "uncompressed_names (--uncompressed-names) pattern '", unmatched.front(),
                "' matches no parameter of model ", options_.model(), " (by substring or regex); its parameters: ",
                names.str());
  }
  optimizer_ = make_optimizer(options_.optimizer(), model_->parameters(), options_.resolved_lr(), options_.momentum(),
                              options_.weight_decay());
}

Trainer::~Trainer() = default;

int64_t Trainer::total_steps() const {
  const int64_t all = options_.epochs() * steps_per_epoch_;
  return options_.steps() > 0 ? std::min(all, options_.steps()) : all;
}

std::vector<std::pair<std::string, std::string>> Trainer::resume_settings() const {
  auto s = options_.settings(/*resume_only=*/true);
  s.emplace_back("train_data", train_fingerprint_);
  s.emplace_back("test_data", test_fingerprint_);
  s.emplace_back("lowrank_version", LOWRANK_VERSION);
  s.emplace_back("torch_version", TORCH_VERSION);
  return s;
}

void Trainer::check_startup_agreement() {
  // First collective of the run: anything that differs between ranks (another --batch-size,
  // --steps, --lr, other data, another build) fails here on every rank, naming the setting,
  // instead of hanging in a mismatched collective later.
  std::ostringstream fp;
  for (const auto& kv : options_.settings(/*resume_only=*/false)) fp << kv.first << "=" << kv.second << "\n";
  fp << "world_size=" << comm_->size() << "\n"
     << "lowrank_version=" << LOWRANK_VERSION << "\n"
     << "torch_version=" << TORCH_VERSION << "\n"
     << "train_data=" << train_fingerprint_ << "\n"
     << "test_data=" << test_fingerprint_ << "\n";
  check_agreement(*comm_, fp.str(), "the run's settings (start every rank with the same options and data)");
}

double Trainer::gather_loss(double local, std::string* bad) {
  auto all = comm_->all_gather(at::full({1}, local, at::kDouble));
  double sum = 0;
  std::ostringstream per_rank;
  int n_bad = 0;
  for (size_t r = 0; r < all.size(); ++r) {
    const double v = all[r].item<double>();
    if (!std::isfinite(v)) per_rank << (n_bad++ ? ", " : "") << r << " (" << v << ")";
    sum += v;
  }
  if (n_bad > 0) {
    *bad = "non-finite loss on rank" + std::string(n_bad > 1 ? "s " : " ") + per_rank.str();
    return std::nan("");
  }
  return sum / double(all.size());
}

std::string Trainer::checkpoint_root() const { return checkpoint_root_; }

std::vector<std::pair<std::string, std::string>> Trainer::environment() const {
  return {{"intra_op_threads", std::to_string(at::get_num_threads())}, {"blas", blas_info().name}};
}

std::string Trainer::save_checkpoint() {
  TORCH_CHECK(!checkpoint_root().empty(), "save_checkpoint: no checkpoint directory (--checkpoint-dir)");
  torch::NoGradGuard no_grad;
  std::vector<std::string> names;
  std::vector<at::Tensor> tensors;
  auto put = [&](const std::string& name, const at::Tensor& t) {
    names.push_back(name);
    tensors.push_back(t.detach().contiguous().clone());
  };
  put("rank", at::tensor({static_cast<int64_t>(comm_->rank())}, at::kLong));
  for (const auto& kv : model_->named_parameters()) put("model/" + kv.key(), kv.value());
  for (const auto& kv : model_->named_buffers()) put("buffer/" + kv.key(), kv.value());
  for (const auto& kv : reducer_->state_dict()) put("reducer/" + kv.first, kv.second);
  put("trainer/step", at::tensor({step_}, at::kLong));
  put("trainer/skipped", at::tensor({skipped_}, at::kLong));
  put("trainer/recent", at::tensor(std::vector<double>(recent_.begin(), recent_.end()), at::kDouble));
  put("trainer/row", at::tensor({row_loss_, row_ms_, double(row_n_)}, at::kDouble));
  put("trainer/epoch_accuracy", at::tensor(epoch_accuracy_, at::kDouble));
  put("trainer/test", at::tensor({test_accuracy_, test_loss_, elapsed_before_}, at::kDouble));
  torch::serialize::OutputArchive archive, optim;
  archive.write("names", c10::IValue(c10::List<std::string>(names)));
  archive.write("tensors", c10::IValue(c10::List<at::Tensor>(tensors)));
  optimizer_->save(optim);
  archive.write("optimizer", optim);
  return ::lowrank::train::save_checkpoint(*comm_, checkpoint_root(), step_, archive, resume_settings(),
                                           static_cast<int>(options_.keep_checkpoints()), environment());
}

int64_t Trainer::resume_from(const std::string& path) {
  CheckpointRef ref;
  run_together(*comm_, "finding the checkpoint under " + path, [&] { ref = find_checkpoint(path); });
  // Every rank must pick the same one (the directory is shared; a rank that sees another is a setup error).
  check_agreement(*comm_, "checkpoint=" + std::to_string(ref.step) + "\n", "the checkpoint to resume from");
  run_together(*comm_, "loading checkpoint " + ref.dir, [&] {
    torch::serialize::InputArchive archive;
    try {
      load_checkpoint(ref, comm_->rank(), comm_->size(), resume_settings(), archive);
    } catch (const c10::Error& e) {
      // A damaged newest checkpoint: offer the older complete ones (they are verified when chosen).
      std::vector<CheckpointRef> older;
      for (const auto& c : list_checkpoints(checkpoint_root_of(ref.dir)))
        if (c.step < ref.step) older.push_back(c);
      if (older.empty() || std::string(e.what_without_backtrace()).find("other settings") != std::string::npos) throw;
      TORCH_CHECK(false, e.what_without_backtrace(), "\n  an older checkpoint is complete: resume from it with --resume ",
                  older.back().dir, older.size() > 1 ? " (" + std::to_string(older.size()) + " older ones in all)" : "",
                  ", or remove ", ref.dir, " to make it the newest");
    }
    const std::string shard = ref.dir + "/rank" + std::to_string(comm_->rank()) + ".pt";
    std::map<std::string, at::Tensor> t;
    try {
      c10::IValue names, tensors;
      archive.read("names", names);
      archive.read("tensors", tensors);
      const auto n = names.toList();
      const auto v = tensors.toTensorList();
      TORCH_CHECK(n.size() == v.size(), "names and tensors differ in count");
      for (size_t i = 0; i < n.size(); ++i) t[n.get(i).toStringRef()] = v.get(i);
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "checkpoint shard ", shard, " is not a lowrank training shard: ",
                  dynamic_cast<const c10::Error*>(&e) ? static_cast<const c10::Error&>(e).what_without_backtrace()
                                                      : e.what());
    }
    auto get = [&](const std::string& key) -> at::Tensor {
      auto it = t.find(key);
      TORCH_CHECK(it != t.end(), "checkpoint shard ", shard, " has no '", key, "' (written by another model or version?)");
      return it->second;
    };
    TORCH_CHECK(get("rank").item<int64_t>() == comm_->rank(), "checkpoint shard ", shard, " holds rank ",
                get("rank").item<int64_t>(), "'s state");
    // Check every shape before changing anything.
    auto check_into = [&](const std::string& key, const at::Tensor& dst) {
      const at::Tensor src = get(key);
      TORCH_CHECK(src.sizes() == dst.sizes() && src.scalar_type() == dst.scalar_type(), "checkpoint shard ", shard,
                  ": '", key, "' is ", src.sizes(), " ", src.scalar_type(), ", this model's is ", dst.sizes(), " ",
                  dst.scalar_type(), " (another model?)");
    };
    for (const auto& kv : model_->named_parameters()) check_into("model/" + kv.key(), kv.value());
    for (const auto& kv : model_->named_buffers()) check_into("buffer/" + kv.key(), kv.value());
    std::vector<std::pair<std::string, at::Tensor>> reducer_state;
    for (const auto& kv : t)
      if (kv.first.rfind("reducer/", 0) == 0) reducer_state.emplace_back(kv.first.substr(8), kv.second);
    torch::serialize::InputArchive optim;
    archive.read("optimizer", optim);
    torch::NoGradGuard no_grad;
    reducer_->load_state_dict(reducer_state);
    optimizer_->load(optim);
    for (const auto& kv : model_->named_parameters()) kv.value().copy_(get("model/" + kv.key()));
    for (const auto& kv : model_->named_buffers()) kv.value().copy_(get("buffer/" + kv.key()));
    step_ = get("trainer/step").item<int64_t>();
    skipped_ = get("trainer/skipped").item<int64_t>();
    const at::Tensor recent = get("trainer/recent"), row = get("trainer/row"), acc = get("trainer/epoch_accuracy"),
                     test = get("trainer/test");
    recent_.clear();
    for (int64_t i = 0; i < recent.numel(); ++i) recent_.push_back(recent[i].item<double>());
    row_loss_ = row[0].item<double>();
    row_ms_ = row[1].item<double>();
    row_n_ = static_cast<int64_t>(row[2].item<double>());
    epoch_accuracy_.clear();
    for (int64_t i = 0; i < acc.numel(); ++i) epoch_accuracy_.push_back(acc[i].item<double>());
    test_accuracy_ = test[0].item<double>();
    test_loss_ = test[1].item<double>();
    elapsed_before_ = test[2].item<double>();
    TORCH_CHECK(step_ == ref.step, "checkpoint shard ", shard, " is at step ", step_, ", its manifest at ", ref.step);
  });
  // A resumed run continues one timeline: newer checkpoints of the abandoned one (a roll-back to an
  // older step) are moved aside, so that the root's newest checkpoint is always this run's.
  if (!checkpoint_root().empty())
    run_together(*comm_, "moving newer checkpoints aside", [&] {
      if (comm_->rank() != 0) return;
      for (const auto& moved : abandon_newer_checkpoints(checkpoint_root(), step_))
        resume_notes_.push_back("note: checkpoint newer than step " + std::to_string(step_) + " moved aside to " +
                                moved);
    });
  // Bit-for-bit continuation also needs the same intra-op threads and BLAS (sums in another order
  // round differently): not refused, since a run on another machine is legitimate, but said.
  const auto now = environment();
  for (const auto& was : checkpoint_environment(ref))
    for (const auto& is : now)
      if (was.first == is.first && was.second != is.second)
        resume_notes_.push_back("warning: checkpoint " + ref.dir + " was written with " + was.first + " " +
                                was.second + ", this run has " + is.second +
                                ": training continues, but its weights will differ in the last bits from an "
                                "uninterrupted run's" +
                                (was.first == "intra_op_threads" ? " (pass --threads " + was.second + " for a bit-exact resume)"
                                                                 : std::string()));
  resumed_from_ = step_;
  return step_;
}

std::pair<double, double> Trainer::evaluate() {
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
  return {totals[0].item<double>() / total, totals[1].item<double>() / total};
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

TrainResult Trainer::run() {
  TrainResult res;
  res.steps_per_epoch = steps_per_epoch_;
  res.resumed_from_step = resumed_from_;
  const int64_t total = total_steps();
  const int64_t batch = options_.batch_size();
  const int64_t first_step = step_;
  const auto t_start = Clock::now();
  const double elapsed0 = elapsed_before_;
  auto elapsed = [&] { return elapsed0 + seconds_since(t_start); };
  auto last_log = t_start;
  struct {
    std::vector<double> step, forward_backward, wait, compress, collective, optimizer;
  } timing;
  double log_loss = 0, log_ms = 0;
  int64_t log_n = 0;
  const bool checkpointing = !checkpoint_root().empty();
  const int64_t warmup = options_.resolved_warmup_steps(total);

  auto progress = [&](int64_t epoch) {
    if (!log_) return;
    const auto& st = reducer_->stats();
    *log_ << "step " << step_ << "/" << total << "  epoch " << epoch << "/" << options_.epochs() << "  loss "
          << std::fixed << std::setprecision(4) << log_loss / std::max<int64_t>(log_n, 1) << "  "
          << std::setprecision(1) << log_ms / std::max<int64_t>(log_n, 1) << " ms/step  sent "
          << megabytes(st.floats_sent) << "  ratio " << std::setprecision(1) << st.compression_ratio() << "x"
          << (skipped_ > 0 ? "  skipped " + std::to_string(skipped_) : std::string()) << std::defaultfloat
          << std::endl;
    log_loss = log_ms = 0;
    log_n = 0;
    last_log = Clock::now();
  };
  auto checkpoint = [&] {
    elapsed_before_ = elapsed();
    res.last_checkpoint = save_checkpoint();
    if (log_) *log_ << "checkpoint: step " << step_ << " -> " << res.last_checkpoint << std::endl;
  };
  // A skipped step: nothing was reduced or updated on any rank; the batch is consumed.
  auto skip = [&](const std::string& why) {
    ++skipped_;
    if (log_) *log_ << "step " << step_ << " skipped: " << why << " (" << skipped_ << " skipped so far)" << std::endl;
    const int64_t limit = options_.max_skipped_steps();
    TORCH_CHECK(limit < 0 || skipped_ <= limit, "step ", step_, ": ", why, "; ", skipped_,
                " steps skipped, more than --max-skipped-steps ", limit, "; every rank stopped (hint: lower --lr, "
                "currently ", options_.resolved_lr(), ", or add warm-up steps)");
  };

  for (int64_t epoch = step_ / steps_per_epoch_ + 1; epoch <= options_.epochs() && step_ < total; ++epoch) {
    res.epochs = epoch;
    at::Tensor rows = shard(train_.size(), options_.seed(), epoch - 1, comm_->rank(), comm_->size());
    const int64_t per_rank = rows.size(0);
    for (int64_t b = step_ % steps_per_epoch_; b < steps_per_epoch_ && step_ < total; ++b) {
      if (hook_) hook_(step_);
      const auto t0 = Clock::now();
      at::Tensor idx = rows.narrow(0, b * batch, std::min(batch, per_rank - b * batch));
      at::Tensor x = train_.batch_inputs(idx), y = train_.batch_targets(idx);
      const double lr =
          scheduled_lr(options_.lr_schedule(), options_.resolved_lr(), step_, total, warmup);
      set_lr(*optimizer_, lr);
      optimizer_->zero_grad();  // detach_() and zero_() in place: the gradients stay in the reducer's buckets
      const auto t_fb = Clock::now();
      at::Tensor loss = cross_entropy(model_->forward(x), y);
      std::string bad;
      const double mean_loss = gather_loss(loss.item<double>(), &bad);
      bool applied = false;
      auto t_reduce = Clock::now(), t_opt = t_reduce;
      if (bad.empty()) {
        if (grad_hook_) grad_hook_(step_, *model_);
        loss.backward();  // with overlap on, buckets are compressed and sent from here on
        t_reduce = Clock::now();
        applied = reducer_->reduce();
        t_opt = Clock::now();
        if (applied) {
          if (options_.clip_grad_norm() > 0) clip_gradients(options_.clip_grad_norm());
          optimizer_->step();
        } else {
          std::ostringstream why;
          why << "non-finite gradient on rank";
          const auto& ranks = reducer_->last_nonfinite_ranks();
          why << (ranks.size() > 1 ? "s" : "");
          for (size_t i = 0; i < ranks.size(); ++i) why << (i ? ", " : " ") << ranks[i];
          bad = why.str();
        }
      }
      const double ms = 1e3 * seconds_since(t0);
      if (applied) {
        const auto& st = reducer_->stats();
        timing.step.push_back(ms);
        timing.forward_backward.push_back(1e3 * std::chrono::duration<double>(t_reduce - t_fb).count());
        timing.wait.push_back(1e3 * st.last_wait_seconds);
        timing.compress.push_back(1e3 * st.last_compress_seconds);
        timing.collective.push_back(1e3 * st.last_comm_seconds);
        timing.optimizer.push_back(1e3 * seconds_since(t_opt));
      }
      if (applied) {
        row_loss_ += mean_loss;
        row_ms_ += ms;
        ++row_n_;
        log_loss += mean_loss;
        log_ms += ms;
        ++log_n;
        recent_.push_back(mean_loss);
        if (static_cast<int64_t>(recent_.size()) > options_.metrics_every()) recent_.pop_front();
      } else {
        skip(bad);  // names the step as counted when it started
      }
      last_step_skipped_ = !applied;
      ++step_;

      const bool epoch_end = b + 1 == steps_per_epoch_ || step_ == total;
      const bool eval_now = epoch_end || (options_.eval_every() > 0 && step_ % options_.eval_every() == 0);
      double accuracy = -1, val_loss = -1;
      if (eval_now) {
        if (log_n > 0) progress(epoch);
        auto acc_loss = evaluate();
        accuracy = acc_loss.first;
        val_loss = acc_loss.second;
        test_accuracy_ = acc_loss.first;
        test_loss_ = acc_loss.second;
        if (epoch_end) epoch_accuracy_.push_back(accuracy);
        if (log_) {
          if (epoch_end)
            *log_ << "epoch " << epoch << "/" << options_.epochs() << " done at step " << step_ << ": ";
          else
            *log_ << "step " << step_ << "/" << total << " evaluation: ";
          *log_ << std::fixed << std::setprecision(4);
          if (options_.language_model())
            *log_ << "val loss " << acc_loss.second << "  val perplexity " << std::setprecision(2)
                  << std::exp(acc_loss.second) << "  next-token accuracy " << std::setprecision(4) << acc_loss.first;
          else
            *log_ << "test accuracy " << acc_loss.first << "  test loss " << acc_loss.second;
          *log_ << "  elapsed " << std::setprecision(1) << elapsed() << " s" << std::defaultfloat << std::endl;
        }
      } else if (seconds_since(last_log) >= options_.log_every()) {
        progress(epoch);
      }
      if (metrics_ && (eval_now || step_ % options_.metrics_every() == 0)) {
        const auto& st = reducer_->stats();
        MetricsRow row;
        row.step = step_;
        row.epoch = epoch;
        row.train_loss = row_n_ > 0 ? row_loss_ / double(row_n_) : std::nan("");
        row.lr = lr;
        row.step_ms = row_n_ > 0 ? row_ms_ / double(row_n_) : 0.0;
        row.floats_sent = st.floats_sent;
        row.dense_floats = st.dense_floats;
        row.compression_ratio = st.compression_ratio();
        row.relative_error = st.relative_error;
        row.ef_norm = st.ef_norm;
        row.test_accuracy = accuracy;
        row.val_loss = val_loss;
        row.val_perplexity = options_.language_model() && val_loss >= 0 ? std::exp(val_loss) : -1;
        row.skipped_steps = skipped_;
        row.elapsed_s = elapsed();
        metrics_->write(row);
        row_loss_ = row_ms_ = 0;
        row_n_ = 0;
      }
      const bool stop_now = options_.stop_after() > 0 && step_ - first_step >= options_.stop_after() && step_ < total;
      if (checkpointing && ((options_.checkpoint_every() > 0 && step_ % options_.checkpoint_every() == 0) ||
                            step_ == total || stop_now))
        checkpoint();
      if (stop_now) {
        res.stopped_early = true;
        break;
      }
    }
    if (res.stopped_early) break;
  }

  res.steps = step_;
  res.skipped_steps = skipped_;
  res.test_accuracy = test_accuracy_;
  res.test_loss = test_loss_;
  res.epoch_test_accuracy = epoch_accuracy_;
  res.language_model = options_.language_model();
  if (res.language_model) {
    res.val_perplexity = std::exp(test_loss_);
    res.vocab_size = train_.classes;
    res.tokenizer = train_.tokenizer;
  }
  res.parameters = models::parameter_count(*model_);
  if (res.epochs == 0) res.epochs = std::min(options_.epochs(), (step_ + steps_per_epoch_ - 1) / steps_per_epoch_);
  double tail = 0;
  for (double l : recent_) tail += l;
  res.final_train_loss = recent_.empty() ? 0.0 : tail / double(recent_.size());
  // The last step was skipped (a non-finite loss or gradient): the mean of earlier steps would
  // pass for the model's loss, so none is reported.
  if (last_step_skipped_) res.final_train_loss = std::nan("");
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
  if (reducer_->compressor().traits().communicates) {
    res.weights_checksum = check_weights(&res.rank_checksums);
  } else {
    res.weights_checksum = weights_checksum(*model_);  // noop: ranks drift apart by design
    res.weights_agree = false;
  }
  res.weights_sha256 = weights_sha256(*model_);
  res.reducer = reducer_->stats();
  res.buckets_per_step = static_cast<int64_t>(reducer_->bucket_count());
  res.overlap = reducer_->overlapping();
  res.reducer_description = reducer_->describe();
  res.wall_seconds = elapsed();
  return res;
}

}  // namespace train
}  // namespace lowrank
