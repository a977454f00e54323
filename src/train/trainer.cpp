// The trainer's construction and set-up checks; its loop is trainer_loop.cpp, its checkpoints
// trainer_checkpoint.cpp.
#include "lowrank/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>
#include <torch/optim/optimizer.h>
#include <torch/version.h>

#include <cmath>
#include <sstream>

#include "lowrank/comm/agreement.h"
#include "lowrank/models/model_factory.h"
#include "lowrank/train/checkpoint.h"
#include "lowrank/train/optimizer_factory.h"
#include "lowrank/util/blas_info.h"
#include "lowrank/util/hash.h"

namespace lowrank {
namespace train {
namespace {

// Seed domains: the weights and the per-epoch shuffle draw from unrelated streams of one seed.
constexpr uint64_t kInitDomain = 0x1001;
constexpr uint64_t kShuffleDomain = 0x2002;

// The model takes the data's kind (tokens or images) and both sets' examples have one shape.
void check_data_fits(const TrainOptions& options, const data::Dataset& train, const data::Dataset& test) {
  TORCH_CHECK(train.is_tokens() == options.language_model() && test.is_tokens() == options.language_model(),
              "Trainer: model ", options.model(), " needs ", options.language_model() ? "token" : "image",
              " data, got '", train.name, "' and '", test.name, "'");
  const at::Tensor& train_x = train.is_tokens() ? train.tokens : train.images;
  const at::Tensor& test_x = test.is_tokens() ? test.tokens : test.images;
  TORCH_CHECK(train_x.sizes().slice(1) == test_x.sizes().slice(1) && train.classes == test.classes,
              "Trainer: training examples ", train_x.sizes().slice(1), " (", train.classes,
              " classes) and test examples ", test_x.sizes().slice(1), " (", test.classes,
              " classes) differ in shape");
}

models::InputSpec input_spec(const data::Dataset& train) {
  models::InputSpec spec;
  if (train.is_tokens()) {
    spec.sequence_length = train.sequence_length();
  } else {
    spec.channels = train.images.size(1);
    spec.height = train.images.size(2);
    spec.width = train.images.size(3);
  }
  spec.classes = train.classes;
  return spec;
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
  state_ = LoopState(options_.metrics_every());
  check_data_fits(options_, train_, test_);
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

  const uint64_t init_seed = splitmix64(splitmix64(options_.seed()) ^ kInitDomain);
  model_ = models::make_model(options_.model(), input_spec(train_), init_seed, options_.model_size());
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

}  // namespace train
}  // namespace lowrank
