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

at::Tensor Dataset::batch_inputs(const at::Tensor& index) const {
  if (!is_tokens()) return batch_images(index);
  return tokens.index_select(0, index).narrow(1, 0, tokens.size(1) - 1);
}

at::Tensor Dataset::batch_targets(const at::Tensor& index) const {
  if (!is_tokens()) return batch_labels(index);
  return tokens.index_select(0, index).narrow(1, 1, tokens.size(1) - 1);
}

void Dataset::validate() const {
  if (is_tokens()) {
    TORCH_CHECK(tokens.dim() == 2 && tokens.scalar_type() == at::kLong && tokens.size(1) >= 2, "dataset '", name,
                "': tokens must be int64 [N, T+1] with T >= 1, got ", tokens.scalar_type(), " ", tokens.sizes());
    TORCH_CHECK(tokens.size(0) > 0, "dataset '", name, "' is empty");
    TORCH_CHECK(classes >= 2, "dataset '", name, "': the vocabulary size must be >= 2, got ", classes);
    const int64_t lo = tokens.min().item<int64_t>(), hi = tokens.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < classes, "dataset '", name, "': token ids must lie in [0, ", classes, "), found [",
                lo, ", ", hi, "]");
    return;
  }
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
