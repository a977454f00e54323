#pragma once
// The flag groups of TrainOptions that `lowrank train` and `lowrank inspect` share: the model and
// its data, the compressor and the reducer around it. Every flag is bound to the options field it
// sets, so a flag's default is the field's own (TrainOptions, ReducerOptions): there are no copies
// of defaults here. apply_flags() then does what a flag cannot say by itself.
#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "lowrank/train/train_options.h"

namespace lowrank {
namespace cli {

/// Which command the groups are for: train adds the data files, tokenizer and cache flags and the
/// reducer's run-time switches (error feedback, EMA, buckets, overlap).
enum class FlagSet { kInspect, kTrain };

/// --model, the language model's size, its window and vocabulary, --dataset (and for train: --data-dir,
/// --tokenizer, --cache-dir), --compress-embeddings.
void add_model_flags(CLI::App* sub, train::TrainOptions& o, FlagSet set);

/// --compressor, --rank, --opt (collected into `opts`), --no-warm-start, --start-iter,
/// --min-compression-rate, --uncompressed-names (and for train: --no-error-feedback, --ef-beta,
/// --bucket-cap-mb, --no-overlap).
void add_compressor_flags(CLI::App* sub, train::TrainOptions& o, std::vector<std::string>& opts, FlagSet set);

/// After parsing `sub`: the model's own defaults for the flags not given
/// (TrainOptions::apply_model_defaults), dense embeddings unless --compress-embeddings, the
/// compressor's Config from --opt/--rank/--no-warm-start, and the reducer's --no-* switches that `sub` has.
void apply_flags(CLI::App* sub, train::TrainOptions& o, const std::vector<std::string>& opts);

}  // namespace cli
}  // namespace lowrank
