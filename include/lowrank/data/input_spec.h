#pragma once
// The shape of one example of a registered dataset and its number of classes, known without
// loading the data: what `lowrank inspect` builds a model for (the trainer itself reads the shape
// from the loaded tensors, and they agree: a test checks).
#include <string>

#include "lowrank/models/classifier.h"

namespace lowrank {
namespace data {

/// The InputSpec of `dataset` ("fashion-mnist": 1×28×28, 10 classes). Throws listing the valid
/// names for an unknown dataset, and naming the dataset for a registered one with no spec here.
models::InputSpec input_spec(const std::string& dataset);

}  // namespace data
}  // namespace lowrank
