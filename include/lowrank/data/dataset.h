#pragma once
// Dataset: one split held in memory, as the trainer consumes it. Two kinds:
//   images  labelled images: `images` [N, C, H, W] uint8 and `labels` [N]. Images stay uint8 (47 MB
//           for Fashion-MNIST's training split instead of 188 MB as fp32, per worker);
//           batch_images() converts only the rows of one batch and normalizes them.
//   tokens  a token stream cut into N windows: `tokens` [N, T+1] int64, window i = stream[i·T, i·T+T]
//           (consecutive windows share one token). The input is a window's first T tokens, the
//           target its last T (next-token prediction); `classes` is the vocabulary size.
// batch_inputs()/batch_targets() serve both kinds.
#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace lowrank {
namespace data {

/// kTest is the held-out split: Fashion-MNIST's test set, a text corpus's validation split.
enum class Split { kTrain, kTest };
const char* split_name(Split split);

struct Dataset {
  std::string name;      ///< e.g. "fashion-mnist/train"
  at::Tensor images;     ///< [N, C, H, W] uint8, raw pixel values 0..255
  at::Tensor labels;     ///< [N] int64 in [0, classes)
  at::Tensor tokens;     ///< [N, T+1] int64 in [0, classes): token windows (then images and labels are undefined)
  int64_t classes = 0;   ///< classes, or the vocabulary size for tokens
  std::string tokenizer; ///< tokens only: the tokenizer's description (Tokenizer::describe())
  double mean = 0.0;     ///< mean of pixel/255 over the training split (normalization)
  double stddev = 1.0;   ///< standard deviation of pixel/255 over the training split

  bool is_tokens() const { return tokens.defined(); }
  int64_t size() const { return tokens.defined() ? tokens.size(0) : images.defined() ? images.size(0) : 0; }
  /// Tokens per window's input (T); 0 for images.
  int64_t sequence_length() const { return tokens.defined() ? tokens.size(1) - 1 : 0; }
  /// Rows `index` as model input: batch_images(), or the windows' first T tokens [B, T] int64.
  at::Tensor batch_inputs(const at::Tensor& index) const;
  /// Rows `index` as targets: batch_labels() [B], or the windows' last T tokens [B, T] int64.
  at::Tensor batch_targets(const at::Tensor& index) const;
  /// Rows `index` ([B] int64) as fp32 [B, C, H, W], normalized to (pixel/255 − mean) / stddev.
  at::Tensor batch_images(const at::Tensor& index) const;
  /// Rows `index` of the labels, [B] int64.
  at::Tensor batch_labels(const at::Tensor& index) const;
  /// Throws naming the dataset when the tensors' shapes, dtypes or label (token) range are inconsistent.
  void validate() const;
};

}  // namespace data
}  // namespace lowrank
