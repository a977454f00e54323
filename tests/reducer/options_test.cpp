// Reducer options: the size rule of docs/algorithms.md §1.3 (which tensors are compressed), name
// exclusion, and clear errors for bad options and bad parameter lists.
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/compressors/registry.h"
#include "lowrank/reducer/gradient_reducer.h"

namespace lowrank {
namespace {

using Params = std::vector<std::pair<std::string, at::Tensor>>;

std::shared_ptr<comm::Communicator> local() {
  return std::shared_ptr<comm::Communicator>(comm::make_local_communicator());
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "<no error>";
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// ---------------------------------------------------------------------------------------------
// 8. The size rule: an m×n matrix is compressed iff m·n > ρ·c (strict), c being the method's floats
// per compressed step with k = min(r, m, n): (m+n)k for PowerSGD, ½(m+n)k·iters for alternating.

bool compressed_by_hand(int64_t m, int64_t n, int64_t r, double rho, const std::string& mode, int64_t iters) {
  const int64_t k = std::min({r, m, n});
  const double c = mode == "alternating" ? 0.5 * double((m + n) * k * iters) : double((m + n) * k);
  return double(m * n) > rho * c;
}

TEST(ReducerOptions, SizeRuleMatchesTheFormula) {
  constexpr int kSeeds = 300;
  const std::vector<double> rhos = {0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4.25};
  int compressed = 0, dense = 0;
  for (int seed = 0; seed < kSeeds; ++seed) {
    std::mt19937 rng(seed);
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    std::vector<int64_t> shape = {pick(1, 12), pick(1, 12)};
    if (pick(0, 2) == 0) shape.push_back(pick(1, 3));  // a 3-D tensor viewed as [s0, s1·s2]
    const int64_t r = pick(1, 6);
    const double rho = rhos[pick(0, int(rhos.size()) - 1)];
    const bool alternating = pick(0, 1) == 1;
    const std::string mode = alternating ? "alternating" : "two_allreduce";
    const int64_t iters = alternating ? pick(1, 3) : 1;
    const int64_t m = shape[0], n = shape.size() == 2 ? shape[1] : shape[1] * shape[2];
    Config cfg{{"rank", std::to_string(r)}, {"powersgd_mode", mode}};
    if (alternating) cfg.set("iters_per_step", iters);
    GradientReducer red({{"w", at::zeros(shape)}, {"bias", at::zeros({shape[0]})}}, make_compressor("powersgd", cfg),
                        local(), ReducerOptions().min_compression_rate(rho));
    const bool want = compressed_by_hand(m, n, r, rho, mode, iters);
    want ? ++compressed : ++dense;
    EXPECT_EQ(red.compressed_names(), want ? std::vector<std::string>{"w"} : std::vector<std::string>{})
        << "seed=" << seed << " shape=" << at::IntArrayRef(shape) << " r=" << r << " rho=" << rho << " mode=" << mode
        << " iters=" << iters;
  }
  // The loop exercised both outcomes.
  EXPECT_GT(compressed, kSeeds / 10);
  EXPECT_GT(dense, kSeeds / 10);
}

TEST(ReducerOptions, SizeRuleIsStrictAtTheBoundary) {
  struct Case {
    std::vector<int64_t> shape;
    std::string mode;
    double rho;
    bool compressed;
  };
  const std::vector<Case> cases = {
      {{4, 4}, "two_allreduce", 2, false},  // 16 > 2·8 is false
      {{4, 5}, "two_allreduce", 2, true},   // 20 > 2·9
      {{8, 8}, "two_allreduce", 4, false},  // 64 > 4·16 is false
      {{4, 4}, "alternating", 4, false},    // 16 > 4·4 is false
      {{3, 4}, "alternating", 3.5, false},  // 12 > 3.5·3.5 is false: c = ½·7 is not rounded
      {{3, 4}, "alternating", 3.4, true},   // 12 > 3.4·3.5 = 11.9
  };
  for (const auto& c : cases) {
    GradientReducer red({{"w", at::zeros(c.shape)}},
                        make_compressor("powersgd", Config{{"rank", "1"}, {"powersgd_mode", c.mode}}), local(),
                        ReducerOptions().min_compression_rate(c.rho));
    EXPECT_EQ(red.compressed_names().size(), c.compressed ? 1u : 0u)
        << at::IntArrayRef(c.shape) << " " << c.mode << " rho=" << c.rho;
  }
}

TEST(ReducerOptions, VectorsAndScalarsAreNeverCompressed) {
  for (int64_t r : {1, 4, 100}) {
    GradientReducer red({{"v", at::zeros({1000})}, {"s", at::zeros({})}, {"one", at::zeros({1})}},
                        make_compressor("powersgd", Config{{"rank", std::to_string(r)}}), local(),
                        ReducerOptions().min_compression_rate(0));
    EXPECT_TRUE(red.compressed_names().empty()) << "r=" << r;
    EXPECT_EQ(red.expected_bytes(0) / 4, 1000 + 1 + 1);
  }
}

TEST(ReducerOptions, UncompressedNamesMatchBySubstringOrRegex) {
  Params ps;
  for (const std::string name :
       {"embed_tokens.weight", "layer0.attn", "layer12.attn", "layers.2.mlp", "lm_head.weight", "odd[name"})
    ps.emplace_back(name, at::zeros({16, 8}));
  // "embed": substring; "^layer[0-9]+\.attn$": regex (not a substring of anything); "[": an
  // invalid regex, so a plain substring.
  GradientReducer red(ps, make_compressor("powersgd"), local(),
                      ReducerOptions().uncompressed_names({"embed", "^layer[0-9]+\\.attn$", "["}));
  EXPECT_EQ(red.compressed_names(), (std::vector<std::string>{"layers.2.mlp", "lm_head.weight"}));
  // 2 compressed at k(m+n) = 24, 4 dense at 128.
  EXPECT_EQ(red.expected_bytes(0) / 4, 2 * 24 + 4 * 128);
  GradientReducer all(ps, make_compressor("powersgd"), local());
  EXPECT_EQ(all.compressed_names().size(), ps.size());
}

TEST(ReducerOptions, NoneCompressesNothingAtAnyRate) {
  GradientReducer red({{"w", at::zeros({64, 64})}}, make_compressor("none"), local(),
                      ReducerOptions().min_compression_rate(0));
  EXPECT_TRUE(red.compressed_names().empty());
  EXPECT_FALSE(red.error_feedback());
}

// ---------------------------------------------------------------------------------------------
// 11. Bad options and bad parameter lists: errors naming the value.

TEST(ReducerOptions, BadOptionsNameTheValue) {
  struct Case {
    ReducerOptions options;
    std::vector<std::string> must_mention;
  };
  const std::vector<Case> cases = {
      {ReducerOptions().min_compression_rate(-1), {"min_compression_rate", "-1"}},
      {ReducerOptions().min_compression_rate(std::nan("")), {"min_compression_rate", "nan"}},
      {ReducerOptions().start_iter(-2), {"start_iter", "-2"}},
      {ReducerOptions().ef_beta(1), {"ef_beta", "[0, 1)", "got 1"}},
      {ReducerOptions().ef_beta(-0.25), {"ef_beta", "-0.25"}},
      {ReducerOptions().ef_beta(std::nan("")), {"ef_beta", "nan"}},
      {ReducerOptions().stats_every(0), {"stats_every", "got 0"}},
      {ReducerOptions().bucket_cap_mb(-1), {"bucket_cap_mb", "-1"}},
      {ReducerOptions().bucket_cap_mb(std::nan("")), {"bucket_cap_mb", "nan"}},
  };
  for (const auto& c : cases) {
    std::ostringstream given;
    given << c.options;
    const std::string msg = error_of([&] {
      GradientReducer({{"w", at::zeros({8, 6})}}, make_compressor("powersgd"), local(), c.options);
    });
    for (const auto& word : c.must_mention) EXPECT_TRUE(contains(msg, word)) << given.str() << " -> " << msg;
    EXPECT_TRUE(contains(error_of([&] { c.options.validate(); }), c.must_mention[0]));
  }
}

// The keys of ReducerOptions::fields (lowrank bench, the Python module): a bad choice or switch
// names the key, the value and what is valid; what prints reads back as the same options.
TEST(ReducerOptions, KeysReadBackWhatPrintsAndNameBadValues) {
  const std::string residual = error_of([] { read_fields(Config{{"ef_residual", "both"}}, ReducerOptions()); });
  for (const std::string word : {"ef_residual", "'both'", "local", "global"})
    EXPECT_TRUE(contains(residual, word)) << residual;
  const std::string ef = error_of([] { read_fields(Config{{"error_feedback", "2"}}, ReducerOptions()); });
  EXPECT_TRUE(contains(ef, "error_feedback") && contains(ef, "'2'")) << ef;

  const ReducerOptions o = ReducerOptions()
                               .start_iter(3)
                               .min_compression_rate(0.1)
                               .error_feedback(true)
                               .ef_residual(EfResidual::kGlobal)
                               .ef_beta(0.3)
                               .uncompressed_names({"a", "b.c"})
                               .seed(12345678901ULL)
                               .norm_stats(false)
                               .stats_every(4)
                               .bucket_cap_mb(1.0 / 3)
                               .overlap(false)
                               .skip_nonfinite(false);
  Config keys;
  for (const auto& kv : field_pairs(o)) keys.set(kv.first, kv.second == "[a,b.c]" ? "a,b.c" : kv.second);
  const ReducerOptions back = read_fields(keys, ReducerOptions());
  EXPECT_EQ(render_fields(back), render_fields(o));
  EXPECT_EQ(back.bucket_cap_mb(), 1.0 / 3);  // doubles print exactly
  EXPECT_EQ(back.error_feedback(), std::optional<bool>(true));
  EXPECT_EQ(read_fields(Config{{"error_feedback", "default"}}, o).error_feedback(), std::nullopt);
}

TEST(ReducerOptions, BadParameterListsAreRejected) {
  EXPECT_TRUE(
      contains(error_of([] {
                 GradientReducer({{"w", at::zeros({2, 2})}, {"w", at::zeros({3})}}, make_compressor("none"), local());
               }),
               "'w' appears twice"));
  EXPECT_TRUE(contains(error_of([] {
                         GradientReducer({{"u", at::Tensor()}}, make_compressor("none"), local());
                       }),
                       "'u'"));
  EXPECT_TRUE(contains(error_of([] { GradientReducer({}, nullptr, local()); }), "compressor is null"));
  EXPECT_TRUE(
      contains(error_of([] { GradientReducer({}, make_compressor("none"), nullptr); }), "communicator is null"));
}

// Compressed fp64 and fp32 matrices go to buckets of their own (one work dtype per bucket), so a
// model may mix them; each is compressed in its own precision.
TEST(ReducerOptions, MixedPrecisionParametersGetBucketsOfTheirOwn) {
  at::Tensor a = at::zeros({16, 8}), d = at::zeros({16, 8}, at::kDouble);
  GradientReducer red({{"a", a}, {"d", d}}, make_compressor("powersgd", Config{{"rank", "2"}}), local(),
                      ReducerOptions().min_compression_rate(0));
  EXPECT_EQ(red.compressed_names(), (std::vector<std::string>{"a", "d"}));
  EXPECT_EQ(red.bucket_names().size(), 2u);
  // A rank-1 gradient is reproduced exactly (up to rounding of each dtype) by a rank-2 PowerSGD step.
  const at::Tensor u = at::arange(16, at::kDouble).unsqueeze(1), v = at::linspace(-1, 1, 8, at::kDouble).unsqueeze(0);
  a.grad().copy_(u.matmul(v));
  d.grad().copy_(u.matmul(v));
  red.reduce();
  EXPECT_EQ(a.grad().scalar_type(), at::kFloat);
  EXPECT_EQ(d.grad().scalar_type(), at::kDouble);
  EXPECT_TRUE(at::allclose(a.grad().to(at::kDouble), u.matmul(v), 1e-4, 1e-4));
  EXPECT_TRUE(at::allclose(d.grad(), u.matmul(v), 1e-10, 1e-10));
}

TEST(ReducerOptions, PrintEveryField) {
  std::ostringstream os;
  os << ReducerOptions()
            .start_iter(7)
            .min_compression_rate(1.5)
            .error_feedback(false)
            .ef_residual(EfResidual::kGlobal)
            .ef_beta(0.25)
            .uncompressed_names({"embed", "head"})
            .batch_same_shape(false)
            .seed(42)
            .stats_every(5)
            .bucket_cap_mb(2.5)
            .overlap(false);
  const std::string s = os.str();
  for (const std::string part : {"start_iter=7", "min_compression_rate=1.5", "error_feedback=off", "ef_residual=global", "ef_beta=0.25",
                                 "batch_same_shape=false", "seed=42", "uncompressed_names=[embed,head]",
                                 "stats_every=5", "bucket_cap_mb=2.5", "overlap=false"})
    EXPECT_TRUE(contains(s, part)) << s;
}

}  // namespace
}  // namespace lowrank
