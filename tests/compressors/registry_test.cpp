// The compressor registry: the expected names are registered (a lost registration fails here),
// every entry constructs with defaults, and bad names or options give errors naming the bad value.
#include "lowrank/compressors/registry.h"

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "lowrank/compressors/powersgd.h"

namespace lowrank {
namespace {

// The message of the c10::Error thrown by make_compressor(name, config); fails if none is thrown.
std::string error_of(const std::string& name, const Config& config) {
  try {
    make_compressor(name, config);
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  ADD_FAILURE() << "make_compressor('" << name << "') did not throw";
  return "";
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(Registry, TheCoreCompressorsAreRegistered) {
  const auto names = compressor_names();
  for (const std::string expected : {"none", "powersgd"})
    EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end()) << expected << " is not registered";
}

TEST(Registry, EveryEntryConstructsWithDefaultsAndHasHelp) {
  std::set<std::string> seen;
  ASSERT_FALSE(compressor_registry().empty());
  for (const auto& info : compressor_registry()) {
    EXPECT_TRUE(seen.insert(info.name).second) << "'" << info.name << "' is registered twice";
    EXPECT_FALSE(info.help.empty()) << info.name << " has no help text";
    std::unique_ptr<Compressor> c;
    EXPECT_NO_THROW(c = make_compressor(info.name, Config{})) << info.name;
    ASSERT_TRUE(c) << info.name;
    EXPECT_EQ(c->name(), info.name);
    EXPECT_FALSE(c->describe().empty()) << info.name;
    // Compressing an 8×6 matrix costs something and, for a compressor, less than dense; only a
    // method that communicates nothing (noop) sends 0.
    if (c->traits().communicates) EXPECT_GT(c->wire_bytes(8, 6, 0, at::kFloat) / 4, 0) << info.name;
    else EXPECT_EQ(c->wire_bytes(8, 6, 0, at::kFloat) / 4, 0) << info.name;
    if (c->traits().compresses) EXPECT_LT(c->size_test_bytes(64, 64) / 4, 64 * 64) << info.name;
  }
}

TEST(Registry, UnknownCompressorListsTheValidNames) {
  const std::string msg = error_of("powersdg", Config{});
  EXPECT_TRUE(contains(msg, "'powersdg'")) << msg;
  EXPECT_TRUE(contains(msg, "none")) << msg;
  EXPECT_TRUE(contains(msg, "powersgd")) << msg;
}

TEST(Registry, BadPowerSgdOptionsNameTheValue) {
  struct Case {
    Config config;
    std::vector<std::string> must_mention;
  };
  const std::vector<Case> cases = {
      {Config{{"rank", "0"}}, {"rank", "0"}},
      {Config{{"rank", "-3"}}, {"rank", "-3"}},
      {Config{{"rank", "two"}}, {"rank", "'two'", "integer"}},
      {Config{{"rank", "2.5"}}, {"rank", "'2.5'"}},
      {Config{{"rnak", "2"}}, {"rnak", "powersgd", "rank"}},  // unknown key: lists the accepted ones
      {Config{{"powersgd_mode", "alternate"}}, {"'alternate'", "two_allreduce", "alternating"}},
      {Config{{"warm_start", "maybe"}}, {"warm_start", "'maybe'"}},
      {Config{{"orth_eps", "-1e-3"}}, {"orth_eps", "-0.001"}},
      {Config{{"orth_eps", "tiny"}}, {"orth_eps", "'tiny'"}},
      {Config{{"orth_eps", "1e309"}}, {"orth_eps", "'1e309'", "not a finite number"}},  // inf: PowerSGD sent zeros
      {Config{{"orth_eps", "inf"}}, {"orth_eps", "not a finite number"}},
      {Config{{"orth_eps", "nan"}}, {"orth_eps", "'nan'", "not a number"}},
      {Config{{"rank", "99999999999999999999"}}, {"rank", "out of range"}},
      {Config{{"orth_eps_mode", "mul"}}, {"'mul'", "max", "additive"}},
      {Config{{"orth_method", "svd"}}, {"'svd'", "gram_schmidt", "householder"}},
      {Config{{"powersgd_mode", "alternating"}, {"iters_per_step", "0"}}, {"iters_per_step", "0"}},
      {Config{{"iters_per_step", "2"}}, {"iters_per_step=2", "alternating"}},
  };
  for (const auto& c : cases) {
    const std::string msg = error_of("powersgd", c.config);
    std::string given;
    for (const auto& kv : c.config.values()) given += kv.first + "=" + kv.second + " ";
    for (const auto& word : c.must_mention) EXPECT_TRUE(contains(msg, word)) << given << "-> " << msg;
  }
}

TEST(Config, NumbersMustFitTheirType) {
  const Config c{{"big", "4294967297"}, {"inf", "-inf"}, {"ok", "7"}};
  std::string msg;
  try {
    (void)c.get("big", 1);  // an int: 4294967297 used to become 1
  } catch (const c10::Error& e) {
    msg = e.msg();
  }
  EXPECT_NE(msg.find("option big=4294967297 is out of range"), std::string::npos) << msg;
  EXPECT_EQ(c.get("big", int64_t{1}), 4294967297LL);
  EXPECT_THROW((void)c.get("inf", 1.0), c10::Error);
  EXPECT_EQ(c.get("ok", 1), 7);
}

TEST(Registry, OptionsThatDoNotApplyAreRejected) {
  const std::string msg = error_of("none", Config{{"rank", "2"}});
  EXPECT_TRUE(contains(msg, "rank=2")) << msg;
  EXPECT_TRUE(contains(msg, "'none'")) << msg;
  EXPECT_TRUE(contains(msg, "accepts no options")) << msg;
}

// Quantized factors on a compressor without factors: refused, naming what it does accept.
TEST(Registry, FactorDtypeOnACompressorWithoutFactorsIsRejected) {
  for (const char* name : {"topk", "randomk", "qsgd", "signsgd", "fp16", "none"}) {
    const std::string msg = error_of(name, Config{{"factor_dtype", "int8"}});
    EXPECT_TRUE(contains(msg, "factor_dtype=int8")) << name << ": " << msg;
    EXPECT_TRUE(contains(msg, std::string("'") + name + "'")) << name << ": " << msg;
  }
  EXPECT_TRUE(contains(error_of("topk", Config{{"factor_dtype", "int8"}}), "it accepts: density, k"));
}

// One Config reused for a second compressor: a key only the first one reads must still be rejected
// by the second, and the caller's Config is left as it was (so threads may share one).
TEST(Registry, AReusedConfigIsCheckedAfreshForEachCompressor) {
  const Config cfg{{"rank", "2"}, {"restart_period", "5"}};
  EXPECT_NO_THROW(make_compressor("powersgd+", cfg));
  const std::string msg = error_of("powersgd", cfg);
  EXPECT_TRUE(contains(msg, "restart_period=5")) << msg;
  EXPECT_TRUE(contains(msg, "'powersgd'")) << msg;
  EXPECT_NO_THROW(make_compressor("powersgd+", cfg));
}

TEST(Registry, PowerSgdOptionsRoundTripThroughConfig) {
  auto c = make_compressor("powersgd", Config{{"rank", "4"},
                                              {"warm_start", "false"},
                                              {"orth_method", "householder"},
                                              {"orth_eps_mode", "additive"},
                                              {"orth_eps", "0"},
                                              {"powersgd_mode", "alternating"},
                                              {"iters_per_step", "2"}});
  const auto& o = dynamic_cast<const PowerSgd&>(*c).options();
  EXPECT_EQ(o.rank(), 4);
  EXPECT_FALSE(o.warm_start());
  EXPECT_EQ(o.orth_method(), linalg::OrthMethod::kHouseholder);
  EXPECT_EQ(o.orth_eps_mode(), linalg::OrthEpsMode::kAdditive);
  EXPECT_EQ(o.orth_eps(), 0.0);
  EXPECT_EQ(o.mode(), PowerSgdMode::kAlternating);
  EXPECT_EQ(o.iters_per_step(), 2);
  // describe() reproduces the run: every resolved option appears.
  const std::string d = c->describe();
  for (const std::string part : {"rank=4", "warm_start=false", "orth_method=householder", "orth_eps_mode=additive",
                                 "powersgd_mode=alternating", "iters_per_step=2"})
    EXPECT_TRUE(contains(d, part)) << d;
}

// describe() is stored in checkpoints and compared on load: its text must not change, whatever
// way it is produced (these strings were printed before the options were described by field lists).
TEST(Registry, DescriptionsAreStable) {
  const std::vector<std::pair<std::string, Config>> cases = {
      {"none", {}},
      {"noop", {}},
      {"powersgd", {}},
      {"powersgd", {{"powersgd_mode", "alternating"}, {"iters_per_step", "2"}, {"orth_method", "qr"}}},
      {"powersgd", {{"rank", "4"}, {"warm_start", "false"}, {"orth_eps", "0"}, {"orth_eps_mode", "additive"}}},
      {"powersgd+", {{"restart", "rsvd_dist"}, {"orth_method", "auto"}}},
      {"greedylore", {}},
      {"greedylore", {{"scores", "exact"}, {"select", "random"}, {"refresh_input", "discard"}}},
      {"galore", {}},
      {"galore", {{"side", "smaller"}, {"refresh_output", "dense"}, {"galore_scale", "0.25"}}},
  };
  const std::vector<std::string> want = {
      "none",
      "noop",
      "powersgd(rank=1 warm_start=true orth_eps=1e-16 orth_eps_mode=max orth_method=gram_schmidt "
      "powersgd_mode=two_allreduce)",
      "powersgd(rank=1 warm_start=true orth_eps=1e-16 orth_eps_mode=max orth_method=householder "
      "powersgd_mode=alternating iters_per_step=2)",
      "powersgd(rank=4 warm_start=false orth_eps=0 orth_eps_mode=additive orth_method=gram_schmidt "
      "powersgd_mode=two_allreduce)",
      "powersgd+(rank=1 warm_start=true orth_eps=1e-16 orth_eps_mode=max orth_method=auto "
      "powersgd_mode=two_allreduce restart_period=100 restart=rsvd_dist oversampling=8 power_iters=2)",
      "greedylore(rank=1 refresh_period=200 dense_steps=26 scores=shared_probe probes=4 select=greedy "
      "refresh_input=corrected)",
      "greedylore(rank=1 refresh_period=200 dense_steps=26 scores=exact select=random refresh_input=discard)",
      "galore(rank=1 refresh_period=200 side=larger refresh_output=projected galore_scale=1)",
      "galore(rank=1 refresh_period=200 side=smaller refresh_output=dense galore_scale=0.25)",
  };
  ASSERT_EQ(cases.size(), want.size());
  for (size_t i = 0; i < cases.size(); ++i)
    EXPECT_EQ(make_compressor(cases[i].first, cases[i].second)->describe(), want[i]);
}

}  // namespace
}  // namespace lowrank
