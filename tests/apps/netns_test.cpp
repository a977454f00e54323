// Training across two "machines": scripts/netns_test.sh puts one worker in each of two network
// namespaces joined by a veth pair. Needs root (CI runs as root); skipped otherwise.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "lowrank/data/fashion_mnist.h"
#include "support/train_test_support.h"

namespace lowrank {
namespace {

using nlohmann::json;

TEST(TrainNetns, WorkersInTwoNamespacesEndWithIdenticalWeights) {
  if (::geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  if (!testing::file_exists(data::fashion_mnist_path("", data::Split::kTrain, "images")))
    GTEST_SKIP() << "Debian package " << data::kFashionMnistPackage << " is not installed";
  testing::TempDir dir("netns");
  const auto r = testing::run_command("bash " + std::string(LOWRANK_SOURCE_DIR) + "/scripts/netns_test.sh " +
                                      testing::lowrank_binary() + " " + dir.path() + " 6");
  if (r.exit_code == 77) GTEST_SKIP() << r.output;
  ASSERT_EQ(r.exit_code, 0) << r.output;

  const json a = json::parse(testing::read_text(dir / "a/rank0.json"));
  const json b = json::parse(testing::read_text(dir / "b/rank1.json"));
  EXPECT_EQ(a.at("world_size"), 2);
  EXPECT_EQ(b.at("rank"), 1);
  EXPECT_EQ(a.at("steps"), 6);
  EXPECT_EQ(a.at("weights_checksum"), b.at("weights_checksum"));
  const json s = json::parse(testing::read_text(dir / "a/summary.json"));
  EXPECT_EQ(s.at("config").at("launch"), "torchrun");
  EXPECT_EQ(s.at("config").at("master_addr").get<std::string>().rfind("10.213.", 0), 0u) << s.at("config");

  // The namespaces are gone.
  const auto first = r.output.find("namespaces: ");
  ASSERT_NE(first, std::string::npos) << r.output;
  const std::string names = r.output.substr(first + 12, r.output.find('\n', first) - first - 12);
  const std::string ns_a = names.substr(0, names.find(' '));
  const auto listing = testing::run_command("ip netns list");
  EXPECT_EQ(listing.output.find(ns_a), std::string::npos) << listing.output;
}

}  // namespace
}  // namespace lowrank
