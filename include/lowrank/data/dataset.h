#pragma once
// Dataset: a labelled image set held in memory, as the trainer consumes it.
//
// Images stay uint8 (47 MB for Fashion-MNIST's training split instead of 188 MB as fp32, per
// worker); batch_images() converts only the rows of one batch and normalizes them.
#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace lowrank {
namespace data {

enum class Split { kTrain, kTest };
const char* split_name(Split split);

struct Dataset {
  std::string name;      ///< e.g. "fashion-mnist/train"
  at::Tensor images;     ///< [N, C, H, W] uint8, raw pixel values 0..255
  at::Tensor labels;     ///< [N] int64 in [0, classes)
  int64_t classes = 0;
  double mean = 0.0;     ///< mean of pixel/255 over the training split (normalization)
  double stddev = 1.0;   ///< standard deviation of pixel/255 over the training split

  int64_t size() const { return images.defined() ? images.size(0) : 0; }
  /// Rows `index` ([B] int64) as fp32 [B, C, H, W], normalized to (pixel/255 − mean) / stddev.
  at::Tensor batch_images(const at::Tensor& index) const;
  /// Rows `index` of the labels, [B] int64.
  at::Tensor batch_labels(const at::Tensor& index) const;
  /// Throws naming the dataset when the tensors' shapes, dtypes or label range are inconsistent.
  void validate() const;
};

}  // namespace data
}  // namespace lowrank
