#pragma once
// Real English text for the language-model workload (`--model llama`).
//
// Corpora:
//   kjv   The King James Version of the Bible (1611; public domain): 31 102 verses, 4.4 MB of
//         English prose in 1 189 chapters, from Debian main (packages bible-kjv-text, the text,
//         and bible-kjv, its reader /usr/bin/bible, which decompresses it). Why this text: it is
//         one long, coherent book of prose rather than a collection of snippets (fortunes) or
//         markup (manuals), several MB (about 1.1 M SentencePiece tokens at 2048 pieces: enough to
//         train the ~1-25 M parameter presets for an epoch or more on two cores), and stable:
//         the same bytes on every Debian machine, so runs on different machines agree.
//   text  Any plain UTF-8 text the user provides: DIR/train.txt and DIR/val.txt (--data-dir DIR).
//
// Preparation, done once and cached in the cache directory (default_text_cache_dir()/<corpus>):
//   kjv.txt                      the verses as /usr/bin/bible prints them (kjv only)
//   train.txt, val.txt           one verse (line) per line; kjv: every 20th chapter (chapters 20, 40,
//                                …, 1 180: 59 chapters, 5 %) goes to validation, the rest to training
//   sp-bpe-<V>.model             the SentencePiece tokenizer, trained on train.txt only
//   <split>.<tokenizer>.tokens   the split's token ids (int32, little-endian), lines concatenated
// Next to each of them lies <file>.record (data/file_record.h): its size and hash and those of
// what it was made from (the source text, the tokenizer). Every load checks the cached files
// against their records and the source text as it is now, and rebuilds what is stale: a truncated
// or edited file, one left without its record, tokens or a tokenizer made from text that has
// changed since (even at the same size and modification time). A stale kjv text that cannot be
// rebuilt (the reader is gone) is refused, naming the file. Every file is written under a
// temporary name and renamed, and all of this happens while holding an exclusive lock on
// <dir>/.lock, so ranks that start together prepare it once and never read a partial file.
//
// The split's token stream is cut into windows of seq_len + 1 tokens at stride seq_len
// (Dataset::tokens); the trainer shuffles the windows and gives each rank its own share.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lowrank/data/dataset.h"
#include "lowrank/data/tokenizer.h"

namespace lowrank {
namespace data {

constexpr const char* kKjvReader = "/usr/bin/bible";
constexpr const char* kKjvPackages = "bible-kjv bible-kjv-text";
/// Every kKjvValidationEvery-th chapter (1-based) is validation text.
constexpr int64_t kKjvValidationEvery = 20;

struct TextOptions {
  std::string tokenizer = "sentencepiece";  ///< tokenizer_names()
  int64_t vocab_size = 2048;                ///< SentencePiece pieces (byte: always 256)
  int64_t seq_len = 128;                    ///< tokens per training window
  std::string cache_dir;                    ///< "" = default_text_cache_dir()
};

/// $LOWRANK_CACHE_DIR, else $XDG_CACHE_HOME/lowrank, else $HOME/.cache/lowrank.
std::string default_text_cache_dir();
/// Names of the text corpora ("kjv", "text").
std::vector<std::string> text_corpus_names();
bool is_text_corpus(const std::string& name);

/// The directory `corpus`'s prepared files live in (see above).
std::string text_cache_dir(const std::string& corpus, const std::string& data_dir, const TextOptions& options);
/// Prepares what is missing or stale (text, split, tokenizer, token ids) and returns the tokenizer.
/// An empty source text throws naming the file.
std::unique_ptr<Tokenizer> prepare_text(const std::string& corpus, const std::string& data_dir,
                                        const TextOptions& options);
/// Loads `split` (kTest = validation) of `corpus` as token windows, preparing it first if needed.
/// Missing programs, packages or files throw naming them.
Dataset load_text_corpus(const std::string& corpus, const std::string& data_dir, Split split,
                         const TextOptions& options);

}  // namespace data
}  // namespace lowrank
