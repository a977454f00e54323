#include "lowrank/data/dataset.h"

#include <c10/util/Exception.h>

#include <cmath>

namespace lowrank {
namespace data {

const char* split_name(Split split) { return split == Split::kTrain ? "train" : "test"; }

at::Tensor Dataset::batch_images(const at::Tensor& index) const {
  return images.index_select(0, index).to(at::kFloat).div_(255.0).sub_(mean).div_(stddev);
}

at::Tensor Dataset::batch_labels(const at::Tensor& index) const { return labels.index_select(0, index); }

void Dataset::validate() const {
  TORCH_CHECK(images.defined() && labels.defined(), "dataset '", name, "' has no images or no labels");
  TORCH_CHECK(images.dim() == 4 && images.scalar_type() == at::kByte, "dataset '", name,
              "': images must be uint8 [N, C, H, W], got ", images.scalar_type(), " ", images.sizes());
  TORCH_CHECK(labels.dim() == 1 && labels.scalar_type() == at::kLong, "dataset '", name,
              "': labels must be int64 [N], got ", labels.scalar_type(), " ", labels.sizes());
  TORCH_CHECK(images.size(0) == labels.size(0), "dataset '", name, "' has ", images.size(0), " images but ",
              labels.size(0), " labels");
  TORCH_CHECK(images.size(0) > 0, "dataset '", name, "' is empty");
  TORCH_CHECK(classes >= 2, "dataset '", name, "': classes must be >= 2, got ", classes);
  const int64_t lo = labels.min().item<int64_t>(), hi = labels.max().item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < classes, "dataset '", name, "': labels must lie in [0, ", classes, "), found [", lo,
              ", ", hi, "]");
  TORCH_CHECK(std::isfinite(mean) && std::isfinite(stddev) && stddev > 0, "dataset '", name,
              "': normalization needs a finite mean and a positive stddev, got mean ", mean, " stddev ", stddev);
}

}  // namespace data
}  // namespace lowrank
