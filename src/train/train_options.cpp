#include "lowrank/train/train_options.h"

#include <c10/util/Exception.h>

#include <cmath>
#include <sstream>

#include "lowrank/data/dataset_factory.h"
#include "lowrank/data/input_spec.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/train/lr_schedule.h"
#include "lowrank/util/choices.h"
#include "lowrank/train/optimizer_factory.h"
#include "lowrank/models/model_factory.h"

namespace lowrank {
namespace train {
namespace {

// A Config with the same values and no record of which keys were read.
Config fresh_copy(const Config& c) {
  Config out;
  for (const auto& kv : c.values()) out.set(kv.first, kv.second);
  return out;
}

// Whether compressor `name` reads the key "rank": build it from {rank=<default>} alone.
bool reads_rank(const std::string& name, int64_t rank) {
  Config probe;
  probe.set("rank", std::to_string(rank));
  try {
    (void)lowrank::make_compressor(name, probe);
    return true;
  } catch (const c10::Error&) {
    return false;
  }
}

// Throws "<name> must lie in [lo, hi]<note>, got <value>".
void check_count(const char* name, int64_t value, int64_t lo, int64_t hi, const char* note = "") {
  TORCH_CHECK(value >= lo && value <= hi, name, " must lie in [", lo, ", ", hi, "]", note, ", got ", value);
}

}  // namespace

void TrainOptions::validate() const {
  models::check_model_name(model());
  data::check_dataset_name(dataset());
  TORCH_CHECK(language_model() == data::is_text_dataset(dataset()), "model ", model(), " ",
              language_model() ? "is a language model and needs a text dataset (--dataset kjv or text)"
                               : "classifies images and needs an image dataset (--dataset fashion-mnist)",
              ", got --dataset ", dataset());
  if (language_model()) {
    (void)models::llama_preset(model_preset());
    check_count("layers", layers(), 0, kMaxLayers, " (0 = the preset's)");
    check_count("width", width(), 0, kMaxWidth, " (0 = the preset's)");
    check_count("heads", heads(), 0, kMaxWidth, " (0 = the preset's)");
    check_count("seq_len", seq_len(), 0, kMaxSeqLen, " (0 = the preset's)");
    models::llama_options(input_spec(), model_size()).validate();
    data::check_tokenizer_name(tokenizer());
    if (tokenizer() != "byte")
      check_count("vocab_size (--vocab-size)", vocab_size(), kMinVocabSize, kMaxVocabSize,
                  " for the SentencePiece tokenizer");
  }
  check_count("warmup_steps", warmup_steps(), -1, kMaxSteps, " (-1 = automatic)");
  TORCH_CHECK(std::isfinite(clip_grad_norm()) && clip_grad_norm() >= 0,
              "clip_grad_norm must be a finite number >= 0 (0 = no clipping), got ", clip_grad_norm());
  check_count("eval_every", eval_every(), 0, kMaxSteps, " (0 = at epoch ends only)");
  check_optimizer_name(optimizer());
  check_lr_schedule_name(lr_schedule());
  TORCH_CHECK(std::isfinite(lr()) && lr() >= 0, "lr must be a finite number > 0 (or 0 for the optimizer's default), got ",
              lr());
  TORCH_CHECK(momentum() >= 0 && momentum() < 1, "momentum must lie in [0, 1), got ", momentum());
  TORCH_CHECK(std::isfinite(weight_decay()) && weight_decay() >= 0, "weight_decay must be a finite number >= 0, got ",
              weight_decay());
  check_count("batch_size", batch_size(), 1, kMaxBatchSize);
  check_count("epochs", epochs(), 1, kMaxEpochs);
  check_count("steps", steps(), 0, kMaxSteps, " (0 = no limit)");
  TORCH_CHECK(std::isfinite(log_every()) && log_every() > 0, "log_every must be a number of seconds > 0, got ",
              log_every());
  check_count("metrics_every", metrics_every(), 1, kMaxSteps);
  check_count("eval_examples", eval_examples(), 0, kMaxExamples, " (0 = the whole test set)");
  check_count("default_rank (--rank)", default_rank(), 1, kMaxRank);
  check_count("checkpoint_every", checkpoint_every(), 0, kMaxSteps, " (0 = never)");
  TORCH_CHECK(checkpoint_every() == 0 || !checkpoint_dir().empty() || !resume().empty(),
              "checkpoint_every ", checkpoint_every(), " needs a checkpoint directory (--checkpoint-dir)");
  check_count("keep_checkpoints", keep_checkpoints(), 1, kMaxKeepCheckpoints);
  check_count("stop_after", stop_after(), 0, kMaxSteps, " (0 = run to the end)");
  check_count("max_skipped_steps", max_skipped_steps(), -1, kMaxSteps, " (-1 = no limit)");
  TORCH_CHECK(reducer().start_iter() <= kMaxSteps, "start_iter must lie in [0, ", kMaxSteps, "], got ",
              reducer().start_iter());
  resolved_reducer().validate();
  if (compressor() == kAutoCompressor) {
    // Chosen when the job starts (launch/compressor_choice.h): none or powersgd at the rank given.
    std::string given;
    for (const auto& kv : compressor_config().values()) given += (given.empty() ? "" : ", ") + kv.first + "=" + kv.second;
    TORCH_CHECK(given.empty(), "--compressor auto chooses between none and powersgd and takes no compressor option "
                "(--opt, --no-warm-start), got ", given, "; give the compressor itself to set its options");
    TORCH_CHECK(!auto_rank(), "--compressor auto with --rank auto: the choice compresses at a fixed rank; give --rank N "
                "(N >= 4) or choose --compressor powersgd --rank auto yourself");
    TORCH_CHECK(default_rank() >= 4, "--compressor auto compresses at rank >= 4 (its accuracy guard), got --rank ",
                default_rank());
    TORCH_CHECK(resume().empty(), "--compressor auto with --resume: the resumed run must keep the compressor it was "
                "saved with; give that compressor (the interrupted run's start line says which auto chose)");
    (void)TrainOptions(*this).compressor("powersgd").make_compressor();
    return;
  }
  (void)make_compressor();  // unknown compressor names and options throw here, listing the valid ones
}

double TrainOptions::resolved_lr() const { return lr() > 0 ? lr() : default_lr(optimizer()); }

Config TrainOptions::resolved_compressor_config() const {
  Config c = fresh_copy(compressor_config());
  if (!c.has("rank") && auto_rank()) {
    Config probe;
    probe.set("rank", "auto");
    bool takes_auto = true;
    try {
      (void)lowrank::make_compressor(compressor(), probe);
    } catch (const c10::Error&) {
      takes_auto = false;
    }
    TORCH_CHECK(takes_auto, "--rank auto (rank=auto): compressor '", compressor(),
                "' does not plan its rank; rank=auto applies to powersgd, powersgd+ and greedylore");
    c.set("rank", "auto");
  } else if (!c.has("rank") && reads_rank(compressor(), default_rank())) {
    c.set("rank", std::to_string(default_rank()));
  }
  return c;
}

std::unique_ptr<Compressor> TrainOptions::make_compressor() const {
  TORCH_CHECK(compressor() != kAutoCompressor, "--compressor auto is chosen when `lowrank train` starts, from a "
              "measurement of the job's link; here give a compressor (",
              join_names(compressor_names()), ")");
  return lowrank::make_compressor(compressor(), resolved_compressor_config());
}

int64_t TrainOptions::resolved_warmup_steps(int64_t total_steps) const {
  if (warmup_steps() >= 0) return std::min(warmup_steps(), total_steps);
  return language_model() ? total_steps / 10 : 0;
}

bool TrainOptions::language_model() const { return models::is_language_model(model()); }

models::ModelSize TrainOptions::model_size() const {
  models::ModelSize m;
  m.preset = model_preset();
  m.layers = layers();
  m.width = width();
  m.heads = heads();
  m.seq_len = seq_len();
  return m;
}

models::InputSpec TrainOptions::input_spec() const {
  if (!language_model()) return data::input_spec(dataset());
  models::InputSpec spec;
  spec.classes = tokenizer() == "byte" ? 256 : vocab_size();
  spec.sequence_length = text_options().seq_len;
  return spec;
}

data::TextOptions TrainOptions::text_options() const {
  data::TextOptions t;
  t.tokenizer = tokenizer();
  t.vocab_size = vocab_size();
  t.seq_len = seq_len() > 0 ? seq_len() : models::llama_preset(model_preset()).seq_len();
  t.cache_dir = cache_dir();
  return t;
}

TrainOptions& TrainOptions::apply_model_defaults(const std::function<bool(const std::string& key)>& given) {
  if (!language_model()) return *this;
  if (!given("dataset")) dataset("kjv");
  if (!given("optimizer")) optimizer("adamw");
  if (!given("clip_grad_norm")) clip_grad_norm(1.0);
  if (!given("batch_size")) batch_size(16);
  if (!given("eval_every")) eval_every(100);
  return *this;
}

ReducerOptions TrainOptions::resolved_reducer() const {
  ReducerOptions r = reducer();
  r.seed(seed());
  // The papers keep a language model's embedding and output layers dense (GaLore and PowerSGD+
  // compress the blocks' matrices only).
  if (language_model() && dense_embeddings() && r.uncompressed_names().empty())
    r.uncompressed_names({"tok_embeddings", "output"});
  // relative_error and ef_norm are only shown in metrics rows: measure them on those steps.
  if (r.stats_every() == 1) r.stats_every(std::max<int64_t>(1, metrics_every()));
  return r;
}

namespace {

// The fields (by their key in TrainOptions::fields) that a resumed run must match, and those that
// ranks must agree on but a resumption may change. Paths are in neither: they may differ between
// machines (data_dir: the data's fingerprint is compared instead; out, checkpoint_dir and resume:
// only whether they are set, which decides collectives).
const std::vector<std::string> kResumeFields = {"model",          "dataset",  "compressor",   "optimizer", "lr_schedule",
                                                "warmup_steps",   "clip_grad_norm", "momentum", "weight_decay",
                                                "batch_size",     "epochs",   "steps",        "seed"};
const std::vector<std::string> kAgreeFields = {"max_skipped_steps", "metrics_every", "eval_examples", "eval_every",
                                               "log_every",         "checkpoint_every", "stop_after"};

}  // namespace

std::vector<std::pair<std::string, std::string>> TrainOptions::settings(bool resume_only) const {
  const auto given = field_pairs(*this);  // every field as text (util/fields.h: doubles exactly)
  std::vector<std::pair<std::string, std::string>> out;
  auto put = [&out](const std::string& k, const std::string& v) { out.emplace_back(k, v); };
  auto put_fields = [&](const std::vector<std::string>& keys) {
    for (const auto& key : keys)
      for (const auto& kv : given)
        if (kv.first == key) put(key, kv.second);
  };
  put_fields(kResumeFields);
  // What the fields resolve to.
  if (language_model()) {
    const data::TextOptions t = text_options();
    std::ostringstream size;
    size << "preset=" << model_preset() << " layers=" << layers() << " width=" << width() << " heads=" << heads()
         << " seq_len=" << t.seq_len;
    put("model_size", size.str());
    put("tokenizer", t.tokenizer + (t.tokenizer == "byte" ? "" : " vocab_size=" + std::to_string(t.vocab_size)));
  }
  std::string copts;
  const Config resolved = resolved_compressor_config();
  for (const auto& kv : resolved.values()) copts += (copts.empty() ? "" : ",") + kv.first + "=" + kv.second;
  put("compressor_options", copts);
  put("lr", exact_text(resolved_lr()));
  // stats_every follows metrics_every, which may change on resumption (it is compared below).
  put("reducer", render_fields(resolved_reducer().stats_every(1)));
  if (resume_only) return out;
  put_fields(kAgreeFields);  // metrics_every sets the reducer's stats_every: a collective
  put("checkpointing", checkpoint_dir().empty() && resume().empty() ? "off" : "on");
  put("resuming", resume().empty() ? "no" : "yes");
  return out;
}

std::ostream& operator<<(std::ostream& os, const TrainOptions& o) {
  os << "model=" << o.model();
  if (o.language_model()) {
    os << " (" << o.model_preset() << ": " << models::llama_options(o.input_spec(), o.model_size()) << ", tokenizer "
       << o.tokenizer() << ")";
  }
  os << " dataset=" << o.dataset()
     << " data_dir=" << (o.data_dir().empty() ? "<default>" : o.data_dir()) << " compressor=" << o.compressor()
     << " compressor_options={";
  bool first = true;
  const Config resolved = o.resolved_compressor_config();
  for (const auto& kv : resolved.values()) {
    os << (first ? "" : ",") << kv.first << "=" << kv.second;
    first = false;
  }
  os << "} optimizer=" << o.optimizer() << " lr=" << o.resolved_lr() << " lr_schedule=" << o.lr_schedule()
     << (o.warmup_steps() != 0 ? " warmup_steps=" + (o.warmup_steps() < 0 ? std::string("auto")
                                                                            : std::to_string(o.warmup_steps()))
                                : std::string())
     << (o.clip_grad_norm() > 0 ? " clip_grad_norm=" + std::to_string(o.clip_grad_norm()) : std::string())
     << " momentum=" << o.momentum()
     << " weight_decay=" << o.weight_decay() << " batch_size=" << o.batch_size() << " epochs=" << o.epochs()
     << " steps=" << (o.steps() > 0 ? std::to_string(o.steps()) : std::string("unlimited")) << " seed=" << o.seed()
     << " log_every=" << o.log_every() << "s metrics_every=" << o.metrics_every()
     << (o.eval_examples() > 0 ? " eval_examples=" + std::to_string(o.eval_examples()) : std::string())
     << " out=" << (o.out_dir().empty() ? "<none>" : o.out_dir()) << " | reducer: " << o.resolved_reducer();
  return os;
}

}  // namespace train
}  // namespace lowrank
