#include "lowrank/data/input_spec.h"

#include <c10/util/Exception.h>

#include "lowrank/data/dataset_factory.h"
#include "lowrank/data/fashion_mnist.h"

namespace lowrank {
namespace data {

models::InputSpec input_spec(const std::string& dataset) {
  check_dataset_name(dataset);
  if (dataset == "fashion-mnist") {
    models::InputSpec s;
    s.channels = 1;
    s.height = kFashionMnistSide;
    s.width = kFashionMnistSide;
    s.classes = kFashionMnistClasses;
    return s;
  }
  TORCH_CHECK(false, "no input shape is known for dataset '", dataset,
              "' (add it to data::input_spec in src/data/input_spec.cpp)");
}

}  // namespace data
}  // namespace lowrank
