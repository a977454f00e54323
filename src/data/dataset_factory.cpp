#include "lowrank/data/dataset_factory.h"

#include <c10/util/Exception.h>

#include <functional>
#include <map>
#include <sstream>

#include "lowrank/util/choices.h"
#include "lowrank/data/fashion_mnist.h"
#include "lowrank/data/text_corpus.h"

namespace lowrank {
namespace data {
namespace {

struct DatasetInfo {
  std::string name;
  std::string default_dir;
  std::function<Dataset(const std::string&, Split, const TextOptions&)> load;
};

Dataset images(const std::string& dir, Split split, const TextOptions&) { return load_fashion_mnist(dir, split); }

const std::vector<DatasetInfo>& registry() {
  static const std::vector<DatasetInfo> r = {
      {"fashion-mnist", kFashionMnistDir, images},
      {"kjv", "", [](const std::string& dir, Split split, const TextOptions& o) {
         return load_text_corpus("kjv", dir, split, o);
       }},
      {"text", "", [](const std::string& dir, Split split, const TextOptions& o) {
         return load_text_corpus("text", dir, split, o);
       }},
  };
  return r;
}

const DatasetInfo& find(const std::string& name) {
  for (const auto& d : registry())
    if (d.name == name) return d;
  check_choice("dataset", name, dataset_names());
  TORCH_CHECK(false, "unreachable: dataset '", name, "' is listed but not registered");
}

}  // namespace

std::vector<std::string> dataset_names() {
  std::vector<std::string> out;
  for (const auto& d : registry()) out.push_back(d.name);
  return out;
}

void check_dataset_name(const std::string& name) { (void)find(name); }

std::string default_data_dir(const std::string& name) { return find(name).default_dir; }

bool is_text_dataset(const std::string& name) { return is_text_corpus(name); }

Dataset load_dataset(const std::string& name, const std::string& dir, Split split, const TextOptions& text) {
  const auto& d = find(name);
  return d.load(dir.empty() ? d.default_dir : dir, split, text);
}

}  // namespace data
}  // namespace lowrank
