#include "lowrank/models/llama.h"

#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>
#include <torch/nn/functional/loss.h>

#include <atomic>
#include <cmath>
#include <limits>

#include "lowrank/models/model_factory.h"
#include "lowrank/train/trainer.h"
#include "support/train_test_support.h"

namespace lowrank {
namespace {

using testing::error_of;

using models::parameter_count;

models::LlamaOptions small_options() {
  return models::LlamaOptions().vocab_size(11).dim(8).layers(2).heads(2).seq_len(6);
}

TEST(Llama, PresetsHaveTheDocumentedSizes) {
  // Documented in llama.h at 2048 pieces: 0.93 M, 4.3 M, 12.2 M, 24.2 M.
  const std::vector<std::pair<std::string, double>> expected = {
      {"tiny", 0.93e6}, {"small", 4.3e6}, {"medium", 12.2e6}, {"large", 24.2e6}};
  for (const auto& e : expected) {
    const auto o = models::llama_preset(e.first);
    EXPECT_NEAR(double(models::llama_parameter_count(o)), e.second, 0.01 * e.second) << e.first;
  }
  models::Llama tiny(models::llama_preset("tiny"));
  EXPECT_EQ(parameter_count(tiny), models::llama_parameter_count(models::llama_preset("tiny")));
  EXPECT_EQ(models::llama_preset("tiny").resolved_hidden(), 352);  // ⌈8·128/3⌉ = 342 -> 352
  EXPECT_NE(error_of([] { models::llama_preset("huge"); }).find("tiny"), std::string::npos);
}

TEST(Llama, HasTheLlamaLayersAndNoBiases) {
  models::Llama net(small_options());
  auto named = net.named_parameters();
  EXPECT_EQ(named["tok_embeddings.weight"].sizes(), at::IntArrayRef({11, 8}));
  EXPECT_EQ(named["layers.1.wq.weight"].sizes(), at::IntArrayRef({8, 8}));
  EXPECT_EQ(named["layers.0.w1.weight"].sizes(), at::IntArrayRef({32, 8}));  // ⌈64/3⌉ = 22 -> 32
  EXPECT_EQ(named["layers.0.w2.weight"].sizes(), at::IntArrayRef({8, 32}));
  EXPECT_EQ(named["layers.0.attention_norm.weight"].sizes(), at::IntArrayRef({8}));
  EXPECT_EQ(named["output.weight"].sizes(), at::IntArrayRef({11, 8}));
  for (const auto& kv : named) EXPECT_EQ(kv.key().find("bias"), std::string::npos) << kv.key();
  EXPECT_EQ(net.named_buffers().size(), 0u);  // the rotary tables are derived, not state
}

// An independent, loop-by-loop transcription of the LLaMA forward pass for one sequence.
at::Tensor reference_forward(models::Llama& net, const at::Tensor& tokens) {
  auto p = net.named_parameters();
  const auto& o = net.options();
  const int64_t T = tokens.size(0), d = o.dim(), H = o.heads(), D = d / H;
  auto rms = [&](const at::Tensor& x, const at::Tensor& w) {
    return x / at::sqrt(x.pow(2).mean() + o.norm_eps()) * w;
  };
  at::Tensor x = p["tok_embeddings.weight"].index_select(0, tokens);  // [T, d]
  for (int64_t l = 0; l < o.layers(); ++l) {
    const std::string pre = "layers." + std::to_string(l) + ".";
    at::Tensor out = at::zeros_like(x);
    std::vector<at::Tensor> q(T), k(T), v(T);
    for (int64_t t = 0; t < T; ++t) {
      at::Tensor h = rms(x[t], p[pre + "attention_norm.weight"]);
      q[t] = at::mv(p[pre + "wq.weight"], h).clone();
      k[t] = at::mv(p[pre + "wk.weight"], h).clone();
      v[t] = at::mv(p[pre + "wv.weight"], h);
      for (int64_t head = 0; head < H; ++head)
        for (int64_t i = 0; i < D / 2; ++i) {
          const double theta = double(t) * std::pow(10000.0, -2.0 * double(i) / double(D));
          const double c = std::cos(theta), s = std::sin(theta);
          for (auto* vec : {&q[t], &k[t]}) {
            const int64_t a = head * D + 2 * i;
            const double x0 = (*vec)[a].item<double>(), x1 = (*vec)[a + 1].item<double>();
            (*vec)[a] = x0 * c - x1 * s;
            (*vec)[a + 1] = x0 * s + x1 * c;
          }
        }
    }
    for (int64_t t = 0; t < T; ++t) {
      at::Tensor att = at::zeros({d});
      for (int64_t head = 0; head < H; ++head) {
        std::vector<double> score;
        for (int64_t u = 0; u <= t; ++u)  // causal: positions up to t only
          score.push_back((q[t].narrow(0, head * D, D) * k[u].narrow(0, head * D, D)).sum().item<double>() /
                          std::sqrt(double(D)));
        double mx = score[0], z = 0;
        for (double sc : score) mx = std::max(mx, sc);
        for (double& sc : score) z += (sc = std::exp(sc - mx));
        for (int64_t u = 0; u <= t; ++u) att.narrow(0, head * D, D).add_(v[u].narrow(0, head * D, D) * (score[u] / z));
      }
      at::Tensor hx = x[t] + at::mv(p[pre + "wo.weight"], att);
      at::Tensor g = rms(hx, p[pre + "ffn_norm.weight"]);
      at::Tensor a = at::mv(p[pre + "w1.weight"], g), b = at::mv(p[pre + "w3.weight"], g);
      out[t] = hx + at::mv(p[pre + "w2.weight"], a * at::sigmoid(a) * b);
    }
    x = out;
  }
  at::Tensor logits = at::zeros({T, o.vocab_size()});
  for (int64_t t = 0; t < T; ++t) logits[t] = at::mv(p["output.weight"], rms(x[t], p["norm.weight"]));
  return logits;
}

TEST(Llama, ForwardMatchesALoopByLoopTranscription) {
  torch::NoGradGuard no_grad;
  models::Llama net(small_options());
  net.init(3);
  // Norm weights are 1 after init; make them differ so that they are tested too.
  for (auto& kv : net.named_parameters())
    if (kv.value().dim() == 1) kv.value().uniform_(0.5, 1.5);
  at::Tensor tokens = at::tensor({3, 1, 4, 1, 5, 9}, at::kLong);
  at::Tensor fast = net.forward(tokens.unsqueeze(0))[0];
  at::Tensor slow = reference_forward(net, tokens);
  EXPECT_TRUE(at::allclose(fast, slow, 1e-4, 1e-5)) << (fast - slow).abs().max().item<double>();
  // Shorter inputs use the first rows of the rotary tables.
  at::Tensor prefix = net.forward(tokens.narrow(0, 0, 4).unsqueeze(0))[0];
  EXPECT_TRUE(at::allclose(prefix, slow.narrow(0, 0, 4), 1e-4, 1e-5));
}

TEST(Llama, IsCausalAndGradientsReachEveryParameter) {
  models::Llama net(small_options());
  net.init(1);
  at::Tensor a = at::tensor({1, 2, 3, 4, 5, 6}, at::kLong).unsqueeze(0), b = a.clone();
  b[0][3] = 7;  // change position 3
  at::Tensor la = net.forward(a), lb = net.forward(b);
  EXPECT_TRUE(at::equal(la.narrow(1, 0, 3), lb.narrow(1, 0, 3)));  // earlier positions see nothing of it
  EXPECT_FALSE(at::allclose(la.narrow(1, 3, 3), lb.narrow(1, 3, 3)));
  la.sum().backward();
  for (const auto& kv : net.named_parameters()) {
    ASSERT_TRUE(kv.value().grad().defined()) << kv.key();
    EXPECT_GT(kv.value().grad().abs().sum().item<double>(), 0) << kv.key();
  }
}

TEST(Llama, InitIsSeededAndScaled) {
  models::InputSpec spec;
  spec.classes = 2048;
  spec.sequence_length = 128;
  at::manual_seed(1);
  auto a = models::make_model("llama", spec, 5);
  at::manual_seed(2);
  auto b = models::make_model("llama", spec, 5);
  auto c = models::make_model("llama", spec, 6);
  EXPECT_EQ(train::weights_checksum(*a), train::weights_checksum(*b));
  EXPECT_NE(train::weights_checksum(*a), train::weights_checksum(*c));
  auto p = a->named_parameters();
  EXPECT_NEAR(p["tok_embeddings.weight"].std().item<double>(), 0.02, 0.001);
  EXPECT_NEAR(p["layers.0.wo.weight"].std().item<double>(), 0.01, 0.001);  // 0.02/√(2·2)
  EXPECT_TRUE(at::equal(p["norm.weight"], at::ones({128})));
}

TEST(Llama, BadShapesAndOptionsAreRefusedNamingThem) {
  models::Llama net(small_options());
  EXPECT_NE(error_of([&] { net.forward(at::zeros({1, 7}, at::kLong)); }).find("sequence length 7"),
            std::string::npos);
  EXPECT_NE(error_of([&] { net.forward(at::zeros({1, 3})); }).find("token ids"), std::string::npos);
  EXPECT_NE(error_of([] { models::Llama(small_options().heads(3)); }).find("heads"), std::string::npos);
  EXPECT_NE(error_of([] { models::Llama(small_options().heads(8)); }).find("even"), std::string::npos);
}


// --- Activation memory (issue 15, L5: `--seq-len 100000` took the machine down) ---

TEST(Llama, ActivationEstimateGrowsWithTheSquareOfTheSequenceLength) {
  const auto tiny = models::llama_preset("tiny");
  const double t1 = double(models::llama_activation_bytes(tiny, 16, 4096));
  const double t2 = double(models::llama_activation_bytes(tiny, 16, 8192));
  EXPECT_GT(t2 / t1, 3.5);  // the attention's B·H·T² terms dominate at long sequences
  EXPECT_LE(t2 / t1, 4.0);
  EXPECT_NEAR(double(models::llama_activation_bytes(tiny, 32, 4096)) / t1, 2.0, 0.01);  // linear in the batch
  EXPECT_EQ(models::llama_activation_bytes(tiny, 16), models::llama_activation_bytes(tiny, 16, tiny.seq_len()));
  // The run: the tiny preset at --seq-len 100000 and the default batch of 64 needs tens of TB.
  EXPECT_GT(models::llama_activation_bytes(tiny, 64, 100000), int64_t(10) << 40);
  EXPECT_EQ(models::llama_activation_bytes(tiny, 1 << 30, int64_t(1) << 40), std::numeric_limits<int64_t>::max());
  EXPECT_NE(error_of([&] { models::llama_activation_bytes(tiny, 0); }).find("batch must be >= 1, got 0"),
            std::string::npos);
}

// Counts the bytes of CPU tensors alive (and their peak) while it is installed as the CPU allocator.
class CountingAllocator : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) const override {
    c10::DataPtr inner = base_->allocate(n);
    void* data = inner.get();
    auto* held = new Held{std::move(inner), int64_t(n)};
    const int64_t now = live_ += int64_t(n);
    for (int64_t p = peak_.load(); now > p && !peak_.compare_exchange_weak(p, now);) {
    }
    return c10::DataPtr(data, held, &CountingAllocator::release, c10::Device(c10::DeviceType::CPU));
  }
  /// Installs it (the previous allocator keeps doing the work) and restarts the counts.
  void install() {
    base_ = c10::GetCPUAllocator();
    live_ = 0;
    peak_ = 0;
    c10::SetCPUAllocator(this, kPriority);
  }
  void uninstall() { c10::SetCPUAllocator(base_, kPriority); }
  int64_t peak() const { return peak_.load(); }
  static CountingAllocator& instance() {
    static auto* a = new CountingAllocator();  // never destroyed: tensors may outlive a test
    return *a;
  }

 private:
  struct Held {
    c10::DataPtr inner;
    int64_t bytes;
  };
  static void release(void* ctx) {
    auto* held = static_cast<Held*>(ctx);
    instance().live_ -= held->bytes;
    delete held;
  }
  static constexpr uint8_t kPriority = 200;
  c10::Allocator* base_ = nullptr;
  mutable std::atomic<int64_t> live_{0}, peak_{0};
};

TEST(Llama, ActivationEstimateIsCloseToTheMeasuredPeak) {
  // Peak bytes of CPU tensors allocated during one training step (forward, the trainer's
  // cross-entropy, backward) of small models, against the estimate: the estimate must not be below
  // the measured peak, nor more than twice it. The configurations weigh the terms differently: the
  // attention's B·H·T², the feed-forward width, the vocabulary.
  struct Case {
    int64_t batch, seq_len, dim, heads, layers, vocab, hidden;
  };
  for (const Case& c : {Case{2, 64, 32, 2, 2, 64, 0}, Case{2, 192, 32, 4, 2, 64, 0}, Case{1, 48, 64, 2, 3, 512, 0},
                        Case{2, 64, 32, 2, 2, 64, 320}}) {
    const auto o = models::LlamaOptions().vocab_size(c.vocab).dim(c.dim).heads(c.heads).layers(c.layers).seq_len(
        c.seq_len).hidden(c.hidden);
    models::Llama net(o);
    net.init(0);
    const at::Tensor tokens = at::randint(c.vocab, {c.batch, c.seq_len + 1}, at::kLong);
    const at::Tensor x = tokens.narrow(1, 0, c.seq_len).contiguous(), y = tokens.narrow(1, 1, c.seq_len).contiguous();
    auto& counter = CountingAllocator::instance();
    counter.install();
    {
      const at::Tensor logits = net.forward(x);
      torch::nn::functional::cross_entropy(logits.reshape({-1, c.vocab}), y.reshape(-1)).backward();
    }
    counter.uninstall();
    const double measured = double(counter.peak());
    const double estimate = double(models::llama_activation_bytes(o, c.batch));
    EXPECT_GE(estimate, measured) << o << " batch " << c.batch;
    EXPECT_LE(estimate, 2 * measured) << o << " batch " << c.batch;
  }
}

}  // namespace
}  // namespace lowrank
