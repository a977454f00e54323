// Trainer::save_checkpoint() and resume_from(). A shard (checkpoint.h) holds a torch archive of
//   "names", "tensors"  parallel lists: "rank", "model/<parameter>", "buffer/<buffer>",
//                       "reducer/<key>" (GradientReducer::state_dict) and the loop state's keys
//                       (LoopState::fields, "trainer/...")
//   "optimizer"         the optimizer's own archive
#include "lowrank/train/trainer.h"

#include <c10/util/Exception.h>
#include <torch/autograd.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <map>

#include "lowrank/comm/agreement.h"
#include "lowrank/train/checkpoint.h"

namespace lowrank {
namespace train {
namespace {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

std::string message_of(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  return c10_error ? c10_error->what_without_backtrace() : e.what();
}

// The shard's named tensors; throws naming `shard` when the archive holds none.
std::map<std::string, at::Tensor> read_named_tensors(torch::serialize::InputArchive& archive,
                                                     const std::string& shard) {
  std::map<std::string, at::Tensor> out;
  try {
    c10::IValue names, tensors;
    archive.read("names", names);
    archive.read("tensors", tensors);
    const auto n = names.toList();
    const auto v = tensors.toTensorList();
    TORCH_CHECK(n.size() == v.size(), "names and tensors differ in count");
    for (size_t i = 0; i < n.size(); ++i) out[n.get(i).toStringRef()] = v.get(i);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "checkpoint shard ", shard, " is not a lowrank training shard: ", message_of(e));
  }
  return out;
}

// load_checkpoint(), and when the newest checkpoint is damaged, an error that offers the older
// complete ones (they are verified when chosen).
void load_or_offer_older(const CheckpointRef& ref, int rank, int world, const SettingList& settings,
                         torch::serialize::InputArchive& archive) {
  try {
    load_checkpoint(ref, rank, world, settings, archive);
  } catch (const c10::Error& e) {
    std::vector<CheckpointRef> older;
    for (const auto& c : list_checkpoints(checkpoint_root_of(ref.dir)))
      if (c.step < ref.step) older.push_back(c);
    if (older.empty() || std::string(e.what_without_backtrace()).find("other settings") != std::string::npos) throw;
    TORCH_CHECK(false, e.what_without_backtrace(), "\n  an older checkpoint is complete: resume from it with --resume ",
                older.back().dir, older.size() > 1 ? " (" + std::to_string(older.size()) + " older ones in all)" : "",
                ", or remove ", ref.dir, " to make it the newest");
  }
}

// Bit-for-bit continuation also needs the same intra-op threads and BLAS (sums in another order
// round differently): not refused, since a run on another machine is legitimate, but said.
std::vector<std::string> environment_warnings(const CheckpointRef& ref, const SettingList& now) {
  std::vector<std::string> out;
  for (const auto& was : checkpoint_environment(ref))
    for (const auto& is : now)
      if (was.first == is.first && was.second != is.second)
        out.push_back("warning: checkpoint " + ref.dir + " was written with " + was.first + " " + was.second +
                      ", this run has " + is.second +
                      ": training continues, but its weights will differ in the last bits from an uninterrupted "
                      "run's" +
                      (was.first == "intra_op_threads" ? " (pass --threads " + was.second + " for a bit-exact resume)"
                                                       : std::string()));
  return out;
}

}  // namespace

std::string Trainer::save_checkpoint() {
  TORCH_CHECK(!checkpoint_root().empty(), "save_checkpoint: no checkpoint directory (--checkpoint-dir)");
  torch::NoGradGuard no_grad;
  NamedTensors named{{"rank", at::tensor({static_cast<int64_t>(comm_->rank())}, at::kLong)}};
  for (const auto& kv : model_->named_parameters()) named.emplace_back("model/" + kv.key(), kv.value());
  for (const auto& kv : model_->named_buffers()) named.emplace_back("buffer/" + kv.key(), kv.value());
  for (const auto& kv : reducer_->state_dict()) named.emplace_back("reducer/" + kv.first, kv.second);
  for (const auto& kv : state_.state_dict()) named.push_back(kv);
  std::vector<std::string> names;
  std::vector<at::Tensor> tensors;
  for (const auto& kv : named) {
    names.push_back(kv.first);
    tensors.push_back(kv.second.detach().contiguous().clone());
  }
  torch::serialize::OutputArchive archive, optim;
  archive.write("names", c10::IValue(c10::List<std::string>(names)));
  archive.write("tensors", c10::IValue(c10::List<at::Tensor>(tensors)));
  optimizer_->save(optim);
  archive.write("optimizer", optim);
  return ::lowrank::train::save_checkpoint(*comm_, checkpoint_root(), state_.step, archive, resume_settings(),
                                           static_cast<int>(options_.keep_checkpoints()), environment());
}

int64_t Trainer::resume_from(const std::string& path) {
  CheckpointRef ref;
  run_together(*comm_, "finding the checkpoint under " + path, [&] { ref = find_checkpoint(path); });
  // Every rank must pick the same one (the directory is shared; a rank that sees another is a setup error).
  check_agreement(*comm_, "checkpoint=" + std::to_string(ref.step) + "\n", "the checkpoint to resume from");
  run_together(*comm_, "loading checkpoint " + ref.dir, [&] {
    torch::serialize::InputArchive archive;
    load_or_offer_older(ref, comm_->rank(), comm_->size(), resume_settings(), archive);
    load_checkpoint_shard(ref, archive);
  });
  // A resumed run continues one timeline: newer checkpoints of the abandoned one (a roll-back to an
  // older step) are moved aside, so that the root's newest checkpoint is always this run's.
  if (!checkpoint_root().empty())
    run_together(*comm_, "moving newer checkpoints aside", [&] {
      if (comm_->rank() != 0) return;
      for (const auto& moved : abandon_newer_checkpoints(checkpoint_root(), state_.step))
        resume_notes_.push_back("note: checkpoint newer than step " + std::to_string(state_.step) +
                                " moved aside to " + moved);
    });
  for (auto& warning : environment_warnings(ref, environment())) resume_notes_.push_back(std::move(warning));
  resumed_from_ = state_.step;
  return state_.step;
}

void Trainer::load_checkpoint_shard(const CheckpointRef& ref, torch::serialize::InputArchive& archive) {
  const std::string shard = ref.dir + "/rank" + std::to_string(comm_->rank()) + ".pt";
  const std::map<std::string, at::Tensor> t = read_named_tensors(archive, shard);
  auto get = [&](const std::string& key) -> at::Tensor {
    auto it = t.find(key);
    TORCH_CHECK(it != t.end(), "checkpoint shard ", shard, " has no '", key, "' (written by another model or version?)");
    return it->second;
  };
  TORCH_CHECK(get("rank").item<int64_t>() == comm_->rank(), "checkpoint shard ", shard, " holds rank ",
              get("rank").item<int64_t>(), "'s state");
  // Check everything before changing anything.
  auto check_into = [&](const std::string& key, const at::Tensor& dst) {
    const at::Tensor src = get(key);
    TORCH_CHECK(src.sizes() == dst.sizes() && src.scalar_type() == dst.scalar_type(), "checkpoint shard ", shard,
                ": '", key, "' is ", src.sizes(), " ", src.scalar_type(), ", this model's is ", dst.sizes(), " ",
                dst.scalar_type(), " (another model?)");
  };
  for (const auto& kv : model_->named_parameters()) check_into("model/" + kv.key(), kv.value());
  for (const auto& kv : model_->named_buffers()) check_into("buffer/" + kv.key(), kv.value());
  LoopState loaded = state_;
  loaded.load_state_dict(get, "checkpoint shard " + shard);
  TORCH_CHECK(loaded.step == ref.step, "checkpoint shard ", shard, " is at step ", loaded.step, ", its manifest at ",
              ref.step);
  NamedTensors reducer_state;
  for (const auto& kv : t)
    if (kv.first.rfind("reducer/", 0) == 0) reducer_state.emplace_back(kv.first.substr(8), kv.second);
  torch::serialize::InputArchive optim;
  archive.read("optimizer", optim);
  torch::NoGradGuard no_grad;
  reducer_->load_state_dict(reducer_state);
  optimizer_->load(optim);
  for (const auto& kv : model_->named_parameters()) kv.value().copy_(get("model/" + kv.key()));
  for (const auto& kv : model_->named_buffers()) kv.value().copy_(get("buffer/" + kv.key()));
  state_ = std::move(loaded);
}

}  // namespace train
}  // namespace lowrank
