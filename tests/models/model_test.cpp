#include "support/train_test_support.h"
#include "lowrank/models/model_factory.h"

#include <gtest/gtest.h>
#include <torch/autograd.h>

#include <cmath>

#include "lowrank/train/trainer.h"

namespace lowrank {
namespace {

using testing::error_of;

using models::parameter_count;

TEST(Models, CnnHasTheDocumentedLayersAndOutputShape) {
  auto net = models::make_model("cnn", models::InputSpec{}, 0);
  EXPECT_EQ(parameter_count(*net), 215370);  // 416 + 12832 + 200832 + 1290
  auto named = net->named_parameters();
  EXPECT_EQ(named["conv1.weight"].sizes(), at::IntArrayRef({16, 1, 5, 5}));
  EXPECT_EQ(named["conv2.weight"].sizes(), at::IntArrayRef({32, 16, 5, 5}));
  EXPECT_EQ(named["fc1.weight"].sizes(), at::IntArrayRef({128, 1568}));
  EXPECT_EQ(named["fc2.weight"].sizes(), at::IntArrayRef({10, 128}));
  EXPECT_EQ(net->forward(at::randn({3, 1, 28, 28})).sizes(), at::IntArrayRef({3, 10}));
}

TEST(Models, MlpAndSmallInputs) {
  models::InputSpec spec;
  spec.height = 8;
  spec.width = 12;
  spec.classes = 4;
  auto mlp = models::make_model("mlp", spec, 0);
  EXPECT_EQ(parameter_count(*mlp), (96 * 256 + 256) + (256 * 128 + 128) + (128 * 4 + 4));
  EXPECT_EQ(mlp->forward(at::randn({2, 1, 8, 12})).sizes(), at::IntArrayRef({2, 4}));
  auto cnn = models::make_model("cnn", spec, 0);
  EXPECT_EQ(cnn->forward(at::randn({2, 1, 8, 12})).sizes(), at::IntArrayRef({2, 4}));
  const std::string msg = error_of([&] { mlp->forward(at::randn({2, 1, 8, 8})); });
  EXPECT_NE(msg.find("expected 96 input features"), std::string::npos) << msg;
}

TEST(Models, TheSeedAloneDeterminesTheWeights) {
  for (const std::string name : {"mlp", "cnn", "resnet18"}) {
    at::manual_seed(1);  // the global generator must not matter
    const auto a = train::weights_checksum(*models::make_model(name, {}, 42));
    at::manual_seed(2);
    const auto b = train::weights_checksum(*models::make_model(name, {}, 42));
    const auto c = train::weights_checksum(*models::make_model(name, {}, 43));
    EXPECT_EQ(a, b) << name;
    EXPECT_NE(a, c) << name;
  }
}

TEST(Models, InitializationStaysWithinOneOverSqrtFanIn) {
  auto net = models::make_model("cnn", {}, 7);
  double bound = 0;
  for (const auto& kv : net->named_parameters()) {
    const at::Tensor& p = kv.value();
    if (p.dim() >= 2) bound = 1.0 / std::sqrt(double(p.numel() / p.size(0)));
    const double max_abs = p.abs().max().item<double>();
    EXPECT_LE(max_abs, bound) << kv.key();
    EXPECT_GT(max_abs, 0.5 * bound) << kv.key() << " is not spread over its range";
  }
}

// The CIFAR variant of the PowerSGD paper: 3×3 stem without max-pool, BasicBlocks [2,2,2,2].
TEST(Models, ResNet18IsTheCifarVariant) {
  auto net = models::make_model("resnet18", models::InputSpec{}, 0);
  EXPECT_EQ(parameter_count(*net), 11172810);
  auto named = net->named_parameters();
  EXPECT_EQ(named.size(), 62u);
  EXPECT_EQ(named["conv1.weight"].sizes(), at::IntArrayRef({64, 1, 3, 3}));
  EXPECT_EQ(named["layer1.0.conv1.weight"].sizes(), at::IntArrayRef({64, 64, 3, 3}));
  EXPECT_EQ(named["layer2.0.conv1.weight"].sizes(), at::IntArrayRef({128, 64, 3, 3}));
  EXPECT_EQ(named["layer2.0.shortcut.0.weight"].sizes(), at::IntArrayRef({128, 64, 1, 1}));
  EXPECT_EQ(named["layer4.1.conv2.weight"].sizes(), at::IntArrayRef({512, 512, 3, 3}));
  EXPECT_FALSE(named.contains("layer1.0.shortcut.0.weight"));  // identity shortcut
  EXPECT_EQ(named["fc.weight"].sizes(), at::IntArrayRef({10, 512}));
  EXPECT_TRUE(named["bn1.weight"].eq(1).all().item<bool>());
  EXPECT_TRUE(named["bn1.bias"].eq(0).all().item<bool>());
  // No max-pool in the stem: a 28×28 input reaches layer4 at 4×4, so 8×8 inputs still work.
  EXPECT_EQ(net->forward(at::randn({2, 1, 28, 28})).sizes(), at::IntArrayRef({2, 10}));
  models::InputSpec rgb;
  rgb.channels = 3;
  rgb.height = rgb.width = 8;
  rgb.classes = 5;
  auto small = models::make_model("resnet18", rgb, 0);
  EXPECT_EQ(small->forward(at::randn({2, 3, 8, 8})).sizes(), at::IntArrayRef({2, 5}));
  const std::string msg = error_of([&] { net->forward(at::randn({2, 3, 28, 28})); });
  EXPECT_NE(msg.find("ResNet18: expected input [B, 1"), std::string::npos) << msg;
  // Kaiming-normal (fan_out) convolutions: the sample std of the largest one is sqrt(2/(512·9)).
  const double std_ = named["layer4.1.conv2.weight"].std().item<double>();
  EXPECT_NEAR(std_, std::sqrt(2.0 / (512 * 9)), 0.02 * std_);
}

TEST(Models, UnknownNamesListTheValidOnes) {
  const std::string msg = error_of([] { models::make_model("resnet", {}, 0); });
  EXPECT_NE(msg.find("unknown model 'resnet'; valid: mlp, cnn, resnet18"), std::string::npos) << msg;
}

}  // namespace
}  // namespace lowrank
