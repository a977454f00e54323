#pragma once
// Llama: a decoder-only transformer in the style of LLaMA (Touvron et al. 2023), the model family
// the PowerSGD+ and GreedyLore papers pre-train (`lowrank train --model llama`):
//   tok_embeddings [V, d]
//   L × block:  h = x + attention(attention_norm(x));  out = h + feed_forward(ffn_norm(h))
//     attention_norm, ffn_norm  RMSNorm (weight [d], eps 1e-5)
//     attention  wq, wk, wv, wo [d, d]; H heads of d/H; rotary positions (RoPE, base 10000) on q
//                and k, rotating the pairs (2i, 2i+1); causal softmax attention
//     feed_forward  SwiGLU: w2(silu(w1 x) ⊙ w3 x), w1, w3 [f, d], w2 [d, f]
//   norm (RMSNorm), output [V, d] (untied from the embedding)
// No biases anywhere. Input: token ids [B, T] int64 (T <= seq_len); output: logits [B, T, V].
//
// Presets (parameter counts at the default vocabulary of 2048 pieces; f = 8d/3 rounded up to 32):
//   tiny    d 128, L 2, H 4, T 128    0.93 M
//   small   d 256, L 4, H 4, T 128    4.3 M
//   medium  d 384, L 6, H 6, T 256   12.2 M
//   large   d 512, L 7, H 8, T 256   24.2 M
// Initialization (init()): every matrix N(0, 0.02²) as GPT-2 and LLaMA's reference code, the two
// projections back into the residual stream (wo, w2) N(0, (0.02/√(2L))²), RMSNorm weights 1.
//
// Example:
//   auto net = std::make_shared<Llama>(llama_preset("tiny").vocab_size(256));
//   net->init(/*seed=*/0);
//   at::Tensor logits = net->forward(tokens);  // [B, T, 256]
#include <torch/arg.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "lowrank/models/classifier.h"

namespace lowrank {
namespace models {

struct LlamaOptions {
  /// Vocabulary size V. Default 2048.
  TORCH_ARG(int64_t, vocab_size) = 2048;
  /// Model width d. Default 128.
  TORCH_ARG(int64_t, dim) = 128;
  /// Transformer blocks L. Default 2.
  TORCH_ARG(int64_t, layers) = 2;
  /// Attention heads H (d must be divisible by H, and d/H even). Default 4.
  TORCH_ARG(int64_t, heads) = 4;
  /// Feed-forward width f; 0 = 8d/3 rounded up to a multiple of 32. Default 0.
  TORCH_ARG(int64_t, hidden) = 0;
  /// Longest input T (the rotary tables' length). Default 128.
  TORCH_ARG(int64_t, seq_len) = 128;
  /// RMSNorm's epsilon. Default 1e-5.
  TORCH_ARG(double, norm_eps) = 1e-5;

 public:
  int64_t resolved_hidden() const;
  void validate() const;
};
std::ostream& operator<<(std::ostream& os, const LlamaOptions& o);

/// "tiny", "small", "medium", "large".
std::vector<std::string> llama_preset_names();
/// The preset's options (vocab_size left at its default); throws listing the valid names.
LlamaOptions llama_preset(const std::string& name);
/// Parameter count of a model with these options (without building it).
int64_t llama_parameter_count(const LlamaOptions& o);
/// Estimated peak bytes of float32 activations in one training step (forward, cross-entropy loss,
/// backward) of a model with these options on `batch` sequences of `seq_len` tokens (0 = o.seq_len()),
/// without the parameters, their gradients and the optimizer's state. With T = seq_len, d, f, H, L,
/// V as above, in floats:
///   kept for backward   L·(12·B·T·d + 4·B·T·f + B·H·T²) + 4·B·T·d + 2·B·T·V
///   transient, at most  2·B·H·T² (one block's scores and softmax) + 2·B·T·f (its feed-forward's
///                       gradients) + 2·B·T·V (the loss's gradients); plus T² bytes of the causal mask
/// The attention's B·H·T² terms make it grow with the square of the sequence length: the tiny preset
/// at --seq-len 100000 and batch 64 would need about 41 TB. On small models it lies 8-24 % above the
/// peak measured with a counting allocator (Llama.ActivationEstimateIsCloseToTheMeasuredPeak).
/// Saturates at INT64_MAX.
int64_t llama_activation_bytes(const LlamaOptions& o, int64_t batch, int64_t seq_len = 0);

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

class LlamaBlockImpl : public torch::nn::Module {
 public:
  explicit LlamaBlockImpl(const LlamaOptions& o);
  /// x [B, T, d]; cos, sin [T, d/(2H)]; mask [T, T] (true above the diagonal).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& mask);
  RMSNorm attention_norm{nullptr}, ffn_norm{nullptr};
  torch::nn::Linear wq{nullptr}, wk{nullptr}, wv{nullptr}, wo{nullptr};
  torch::nn::Linear w1{nullptr}, w2{nullptr}, w3{nullptr};

 private:
  int64_t heads_;
};
TORCH_MODULE(LlamaBlock);

class Llama : public Classifier {
 public:
  explicit Llama(LlamaOptions options);
  /// tokens [B, T] int64 with T <= seq_len -> logits [B, T, vocab_size].
  at::Tensor forward(at::Tensor tokens) override;
  /// Draws every parameter from `seed` (see above), bit-identically in every process.
  void init(uint64_t seed);
  const LlamaOptions& options() const { return options_; }

 private:
  LlamaOptions options_;
  torch::nn::Embedding tok_embeddings_{nullptr};
  torch::nn::ModuleList layers_;
  RMSNorm norm_{nullptr};
  torch::nn::Linear output_{nullptr};
  at::Tensor cos_, sin_;  // [seq_len, d/(2H)], not parameters or buffers: derived from the options
};

}  // namespace models
}  // namespace lowrank
