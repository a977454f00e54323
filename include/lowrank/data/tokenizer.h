#pragma once
// Tokenizer: text -> token ids for the language-model workload (`--model llama`).
//
//   sentencepiece  a SentencePiece BPE model (Kudo & Richardson 2018; Debian libsentencepiece-dev)
//                  trained on the training split once and cached as <cache>/<name>.model; byte
//                  fallback on, so no text is ever unknown.
//   byte           the UTF-8 bytes themselves (vocabulary 256): no training, no library.
//
// SentencePiece is reached through a module of lowrank's own (kSentencePieceModule, built next to
// the lowrank binary and installed under <prefix>/lib/lowrank), loaded with dlopen: Debian's
// libsentencepiece carries its own protobuf, which crashes a process that also loads LibTorch's
// (src/data/sentencepiece_module/module.cpp). LOWRANK_SENTENCEPIECE_MODULE overrides its path.
//
// Training is deterministic (one thread, no sampling), so every rank and every rerun builds the
// same vocabulary from the same text; train_tokenizer() writes to a temporary name and renames.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lowrank {
namespace data {

constexpr const char* kSentencePieceModule = "liblowrank_sentencepiece.so";

std::vector<std::string> tokenizer_names();  ///< "sentencepiece", "byte"
/// Throws listing the valid names when `name` is not registered.
void check_tokenizer_name(const std::string& name);

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual int64_t vocab_size() const = 0;
  /// Token ids of `text` (one line or many).
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  /// e.g. "sentencepiece bpe, 2048 pieces (<file>)" or "byte (256)".
  virtual std::string describe() const = 0;
};

/// The byte-level tokenizer.
std::unique_ptr<Tokenizer> make_byte_tokenizer();
/// Trains a SentencePiece BPE model of `vocab_size` pieces on the lines of `text_file`, written to
/// `model_file` (tmp + rename). Throws naming the file and SentencePiece's message.
void train_sentencepiece(const std::string& text_file, int64_t vocab_size, const std::string& model_file);
/// Loads a SentencePiece model file; throws naming the file.
std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& model_file);

}  // namespace data
}  // namespace lowrank
