#include "lowrank/models/llama.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>

#include <cmath>
#include <limits>

#include "lowrank/util/choices.h"

namespace lowrank {
namespace models {

int64_t LlamaOptions::resolved_hidden() const {
  if (hidden() > 0) return hidden();
  const int64_t f = (8 * dim() + 2) / 3;  // ⌈8d/3⌉
  return (f + 31) / 32 * 32;
}

void LlamaOptions::validate() const {
  TORCH_CHECK(vocab_size() >= 2, "llama: vocab_size must be >= 2, got ", vocab_size());
  TORCH_CHECK(dim() >= 2, "llama: width (--width) must be >= 2, got ", dim());
  TORCH_CHECK(layers() >= 1, "llama: layers (--layers) must be >= 1, got ", layers());
  TORCH_CHECK(heads() >= 1 && dim() % heads() == 0 && (dim() / heads()) % 2 == 0, "llama: heads (--heads) ",
              heads(), " must divide the width ", dim(), " into heads of even size (rotary positions rotate pairs)");
  TORCH_CHECK(hidden() >= 0, "llama: hidden must be >= 0 (0 = 8d/3 rounded up to 32), got ", hidden());
  TORCH_CHECK(seq_len() >= 1, "llama: seq_len (--seq-len) must be >= 1, got ", seq_len());
  TORCH_CHECK(norm_eps() > 0, "llama: norm_eps must be > 0, got ", norm_eps());
}

std::ostream& operator<<(std::ostream& os, const LlamaOptions& o) {
  return os << "llama(vocab " << o.vocab_size() << ", width " << o.dim() << ", layers " << o.layers() << ", heads "
            << o.heads() << ", ffn " << o.resolved_hidden() << ", seq_len " << o.seq_len() << ")";
}

std::vector<std::string> llama_preset_names() { return {"tiny", "small", "medium", "large"}; }

LlamaOptions llama_preset(const std::string& name) {
  check_choice("llama preset", name, llama_preset_names());
  if (name == "tiny") return LlamaOptions().dim(128).layers(2).heads(4).seq_len(128);
  if (name == "small") return LlamaOptions().dim(256).layers(4).heads(4).seq_len(128);
  if (name == "medium") return LlamaOptions().dim(384).layers(6).heads(6).seq_len(256);
  return LlamaOptions().dim(512).layers(7).heads(8).seq_len(256);
}

int64_t llama_parameter_count(const LlamaOptions& o) {
  const int64_t d = o.dim(), f = o.resolved_hidden();
  return 2 * o.vocab_size() * d + d + o.layers() * (4 * d * d + 3 * d * f + 2 * d);
}

int64_t llama_activation_bytes(const LlamaOptions& o, int64_t batch, int64_t seq_len) {
  TORCH_CHECK(batch >= 1, "llama_activation_bytes: batch must be >= 1, got ", batch);
  TORCH_CHECK(seq_len >= 0, "llama_activation_bytes: seq_len must be >= 0 (0 = the model's), got ", seq_len);
  // In doubles: absurd settings (the reason to estimate) overflow int64 products.
  const double B = double(batch), T = double(seq_len > 0 ? seq_len : o.seq_len()), d = double(o.dim()),
               f = double(o.resolved_hidden()), H = double(o.heads()), L = double(o.layers()),
               V = double(o.vocab_size());
  // Kept for backward, per block: the norms' inputs and outputs, q, k, v and their rotated and
  // reshaped copies, the attention output, the residual sums (12 [B,T,d]); SwiGLU's w1 and w3
  // outputs, silu and the product (4 [B,T,f]); the softmax probabilities [B,H,T,T]. Around the
  // blocks: the embedding, the final norm (4 [B,T,d]), the logits and their log-softmax (2 [B,T,V]).
  const double kept = L * (12 * B * T * d + 4 * B * T * f + B * H * T * T) + 4 * B * T * d + 2 * B * T * V;
  // Transient, at most: one block's scores beside its softmax (forward) or their gradients
  // (backward), the feed-forward's gradients, the loss's gradients; summed, to stay above the peak.
  const double transient = 2 * B * H * T * T + 2 * B * T * f + 2 * B * T * V;
  const double bytes = 4 * (kept + transient) + T * T;  // + the causal mask, one byte per entry
  return bytes >= 9.2e18 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(bytes);
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", at::ones({dim}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  return x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps_) * weight;
}

namespace {

torch::nn::Linear linear(int64_t in, int64_t out) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
}

// Rotates the pairs (2i, 2i+1) of the last dimension of x [B, T, H, D] by the angles of cos/sin [T, D/2].
at::Tensor rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const auto s = x.sizes();
  at::Tensor pairs = x.reshape({s[0], s[1], s[2], s[3] / 2, 2});
  at::Tensor a = pairs.select(-1, 0), b = pairs.select(-1, 1);
  at::Tensor c = cos.view({1, s[1], 1, s[3] / 2}), n = sin.view({1, s[1], 1, s[3] / 2});
  return at::stack({a * c - b * n, a * n + b * c}, -1).reshape(s);
}

}  // namespace

LlamaBlockImpl::LlamaBlockImpl(const LlamaOptions& o) : heads_(o.heads()) {
  const int64_t d = o.dim(), f = o.resolved_hidden();
  attention_norm = register_module("attention_norm", RMSNorm(d, o.norm_eps()));
  wq = register_module("wq", linear(d, d));
  wk = register_module("wk", linear(d, d));
  wv = register_module("wv", linear(d, d));
  wo = register_module("wo", linear(d, d));
  ffn_norm = register_module("ffn_norm", RMSNorm(d, o.norm_eps()));
  w1 = register_module("w1", linear(d, f));
  w2 = register_module("w2", linear(f, d));
  w3 = register_module("w3", linear(d, f));
}

at::Tensor LlamaBlockImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                   const at::Tensor& mask) {
  const int64_t B = x.size(0), T = x.size(1), d = x.size(2), D = d / heads_;
  at::Tensor h = attention_norm->forward(x);
  at::Tensor q = rotary(wq->forward(h).view({B, T, heads_, D}), cos, sin).transpose(1, 2);  // [B, H, T, D]
  at::Tensor k = rotary(wk->forward(h).view({B, T, heads_, D}), cos, sin).transpose(1, 2);
  at::Tensor v = wv->forward(h).view({B, T, heads_, D}).transpose(1, 2);
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)).mul_(1.0 / std::sqrt(double(D)));
  scores = scores.masked_fill(mask, -std::numeric_limits<float>::infinity());
  at::Tensor att = at::matmul(at::softmax(scores, -1), v).transpose(1, 2).reshape({B, T, d});
  at::Tensor out = x + wo->forward(att);
  at::Tensor g = ffn_norm->forward(out);
  return out + w2->forward(at::silu(w1->forward(g)) * w3->forward(g));
}

Llama::Llama(LlamaOptions options) : options_(std::move(options)) {
  options_.validate();
  const auto& o = options_;
  tok_embeddings_ = register_module("tok_embeddings", torch::nn::Embedding(o.vocab_size(), o.dim()));
  layers_ = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.layers(); ++i) layers_->push_back(LlamaBlock(o));
  norm_ = register_module("norm", RMSNorm(o.dim(), o.norm_eps()));
  output_ = register_module("output", linear(o.dim(), o.vocab_size()));
  // RoPE: angle t·θ_i with θ_i = 10000^(−2i/D) for pair i of a head of size D.
  const int64_t D = o.dim() / o.heads();
  at::Tensor inv = at::pow(10000.0, at::arange(0, D, 2, at::kDouble).div(double(D))).reciprocal();
  at::Tensor angles = at::outer(at::arange(o.seq_len(), at::kDouble), inv);
  cos_ = angles.cos().to(at::kFloat);
  sin_ = angles.sin().to(at::kFloat);
}

at::Tensor Llama::forward(at::Tensor tokens) {
  TORCH_CHECK(tokens.dim() == 2 && tokens.scalar_type() == at::kLong, "llama: expected token ids [B, T] int64, got ",
              tokens.scalar_type(), " ", tokens.sizes());
  const int64_t T = tokens.size(1);
  TORCH_CHECK(T >= 1 && T <= options_.seq_len(), "llama: sequence length ", T, " is outside [1, ",
              options_.seq_len(), "] (the model's seq_len)");
  at::Tensor cos = cos_.narrow(0, 0, T), sin = sin_.narrow(0, 0, T);
  at::Tensor mask = at::ones({T, T}, at::kBool).triu(1);
  at::Tensor x = tok_embeddings_->forward(tokens);
  for (const auto& m : *layers_) x = m->as<LlamaBlockImpl>()->forward(x, cos, sin, mask);
  return output_->forward(norm_->forward(x));
}

void Llama::init(uint64_t seed) {
  torch::NoGradGuard no_grad;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const double residual = 0.02 / std::sqrt(2.0 * double(options_.layers()));
  for (auto& kv : named_parameters()) {
    at::Tensor p = kv.value();
    const std::string& name = kv.key();
    if (p.dim() == 1) {
      p.fill_(1.0);  // RMSNorm weights
    } else {
      const bool into_residual = name.size() >= 9 && (name.compare(name.size() - 9, 9, "wo.weight") == 0 ||
                                                      name.compare(name.size() - 9, 9, "w2.weight") == 0);
      p.normal_(0.0, into_residual ? residual : 0.02, gen);
    }
  }
}

}  // namespace models
}  // namespace lowrank
