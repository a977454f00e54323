#include "lowrank/data/fashion_mnist.h"

#include <gtest/gtest.h>

#include "lowrank/data/dataset_factory.h"
#include "support/train_test_support.h"

namespace lowrank {
namespace {

using testing::error_of;

using testing::idx_bytes;
using testing::TempDir;

// The normalization is (x/255 − mean)/std in fp32: a few ulps of the result.
constexpr double kNormalizeTol = 1e-5;

TEST(FashionMnist, LoadsAFourFileDirectory) {
  TempDir dir("fm");
  testing::write_fashion_dir(dir.path(), 12, 5);
  const data::Dataset train = data::load_fashion_mnist(dir.path(), data::Split::kTrain);
  const data::Dataset test = data::load_fashion_mnist(dir.path(), data::Split::kTest);
  EXPECT_EQ(train.name, "fashion-mnist/train");
  EXPECT_EQ(train.images.sizes(), at::IntArrayRef({12, 1, 28, 28}));
  EXPECT_EQ(test.images.sizes(), at::IntArrayRef({5, 1, 28, 28}));
  EXPECT_EQ(train.classes, 10);
  for (int64_t i = 0; i < 12; ++i) EXPECT_EQ(train.labels[i].item<int64_t>(), i % 10);
  // Image 3, pixel (0, 5) is (3 + 5) % 256 = 8.
  at::Tensor batch = train.batch_images(at::tensor({3}, at::kLong));
  EXPECT_EQ(batch.sizes(), at::IntArrayRef({1, 1, 28, 28}));
  const double want = (8 / 255.0 - data::kFashionMnistMean) / data::kFashionMnistStd;
  EXPECT_NEAR(batch[0][0][0][5].item<double>(), want, kNormalizeTol);
}

TEST(FashionMnist, MissingFilesNameThePathAndTheDebianPackage) {
  TempDir dir("fm");
  const std::string msg = error_of([&] { data::load_fashion_mnist(dir.path(), data::Split::kTrain); });
  EXPECT_NE(msg.find(dir / "train-images-idx3-ubyte.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("dataset-fashion-mnist"), std::string::npos) << msg;
}

TEST(FashionMnist, RejectsImageAndLabelCountsThatDiffer) {
  TempDir dir("fm");
  testing::write_fashion_dir(dir.path(), 5, 5);
  testing::write_gz(dir / "train-labels-idx1-ubyte.gz", idx_bytes({4}, {0, 1, 2, 3}));
  const std::string msg = error_of([&] { data::load_fashion_mnist(dir.path(), data::Split::kTrain); });
  EXPECT_NE(msg.find("holds 5 images but"), std::string::npos) << msg;
  EXPECT_NE(msg.find("holds 4 labels"), std::string::npos) << msg;
  EXPECT_NE(msg.find("dataset-fashion-mnist"), std::string::npos) << msg;
}

TEST(FashionMnist, RejectsImagesThatAreNot28By28) {
  TempDir dir("fm");
  testing::write_fashion_dir(dir.path(), 2, 2);
  testing::write_gz(dir / "t10k-images-idx3-ubyte.gz", idx_bytes({2, 27, 28}, std::vector<uint8_t>(2 * 27 * 28, 1)));
  const std::string msg = error_of([&] { data::load_fashion_mnist(dir.path(), data::Split::kTest); });
  EXPECT_NE(msg.find("expected images of shape [N, 28, 28]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("t10k-images-idx3-ubyte.gz"), std::string::npos) << msg;
}

TEST(FashionMnist, RejectsLabelsOutsideTheTenClasses) {
  TempDir dir("fm");
  testing::write_fashion_dir(dir.path(), 3, 3);
  testing::write_gz(dir / "train-labels-idx1-ubyte.gz", idx_bytes({3}, {0, 10, 2}));
  const std::string msg = error_of([&] { data::load_fashion_mnist(dir.path(), data::Split::kTrain); });
  EXPECT_NE(msg.find("label 10 is outside [0, 10)"), std::string::npos) << msg;
}

TEST(FashionMnist, ReadsDebiansFilesWhenInstalled) {
  if (!testing::file_exists(data::fashion_mnist_path("", data::Split::kTest, "images")))
    GTEST_SKIP() << "Debian package " << data::kFashionMnistPackage << " is not installed";
  const data::Dataset test = data::load_fashion_mnist("", data::Split::kTest);
  EXPECT_EQ(test.size(), 10000);
  // The test split is balanced: 1000 images per class.
  at::Tensor counts = at::bincount(test.labels, {}, 10);
  EXPECT_TRUE(at::equal(counts, at::full({10}, 1000, at::kLong))) << counts;
}

TEST(DatasetFactory, UnknownNamesListTheValidOnes) {
  const std::string msg = error_of([] { data::load_dataset("cifar", "", data::Split::kTrain); });
  EXPECT_NE(msg.find("unknown dataset 'cifar'; valid: fashion-mnist"), std::string::npos) << msg;
  EXPECT_EQ(data::default_data_dir("fashion-mnist"), data::kFashionMnistDir);
}

}  // namespace
}  // namespace lowrank
