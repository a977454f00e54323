// The folder tree is the architecture (README.md, "Layout"): each folder of include/lowrank and src
// may include only the folders below it in kLayers, so dependencies point one way and have no
// cycles. A new include that points up fails here, naming the file and the include.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace lowrank {
namespace {

namespace fs = std::filesystem;

// Lowest first: a folder may include itself and the folders before it.
const std::vector<std::string> kLayers = {"util",   "linalg", "comm",  "compressors", "reducer", "ddp",
                                          "models", "data",   "train", "report",      "launch",  "counterexample"};

int layer_of(const std::string& folder) {
  const auto it = std::find(kLayers.begin(), kLayers.end(), folder);
  return it == kLayers.end() ? -1 : static_cast<int>(it - kLayers.begin());
}

TEST(Layout, IncludesPointDownTheLayers) {
  const fs::path root(LOWRANK_SOURCE_DIR);
  const std::regex include_re("#include \"lowrank/(\\w+)/");
  int files = 0;
  for (const char* top : {"include/lowrank", "src"}) {
    for (const auto& folder : fs::directory_iterator(root / top)) {
      if (!folder.is_directory()) continue;
      const std::string name = folder.path().filename().string();
      const int layer = layer_of(name);
      ASSERT_GE(layer, 0) << top << "/" << name << " is no layer of kLayers: add it where it belongs";
      for (const auto& entry : fs::recursive_directory_iterator(folder.path())) {
        const std::string ext = entry.path().extension().string();
        if (!entry.is_regular_file() || (ext != ".h" && ext != ".cpp")) continue;
        ++files;
        std::ifstream in(entry.path());
        std::stringstream text;
        text << in.rdbuf();
        const std::string s = text.str();
        for (std::sregex_iterator m(s.begin(), s.end(), include_re), end; m != end; ++m) {
          const std::string target = (*m)[1];
          EXPECT_GE(layer_of(target), 0) << entry.path() << " includes lowrank/" << target << "/, no layer";
          EXPECT_LE(layer_of(target), layer) << entry.path() << " (layer " << name << ") includes lowrank/" << target
                                             << "/, a layer above it";
        }
      }
    }
  }
  EXPECT_GT(files, 100) << "the source tree was not found under " << root;
}

}  // namespace
}  // namespace lowrank
