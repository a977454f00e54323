#include "lowrank/data/fashion_mnist.h"

#include <c10/util/Exception.h>
#include <unistd.h>

#include "lowrank/data/idx_reader.h"

namespace lowrank {
namespace data {
namespace {

std::string hint() {
  return std::string(" (Fashion-MNIST is provided by the Debian package ") + kFashionMnistPackage +
         ": apt-get install " + kFashionMnistPackage + "; or point --data-dir at a directory holding the four IDX files)";
}

IdxArray read_with_hint(const std::string& path) {
  try {
    return read_idx(path);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, e.msg(), hint());
  }
}

}  // namespace

std::string fashion_mnist_path(const std::string& dir, Split split, const std::string& what) {
  TORCH_CHECK(what == "images" || what == "labels", "fashion_mnist_path: what must be images or labels, got '",
              what, "'");
  const std::string base = (dir.empty() ? std::string(kFashionMnistDir) : dir) + "/" +
                           (split == Split::kTrain ? "train" : "t10k") + "-" + what + "-idx" +
                           (what == "images" ? "3" : "1") + "-ubyte";
  // Prefer the gzip file Debian ships; fall back to an uncompressed copy when only that exists.
  if (::access((base + ".gz").c_str(), F_OK) != 0 && ::access(base.c_str(), F_OK) == 0) return base;
  return base + ".gz";
}

Dataset load_fashion_mnist(const std::string& dir, Split split) {
  const std::string images_path = fashion_mnist_path(dir, split, "images");
  const std::string labels_path = fashion_mnist_path(dir, split, "labels");
  IdxArray images = read_with_hint(images_path);
  IdxArray labels = read_with_hint(labels_path);
  TORCH_CHECK(images.dims.size() == 3 && images.dims[1] == kFashionMnistSide && images.dims[2] == kFashionMnistSide,
              "corrupt Fashion-MNIST file ", images_path, ": expected images of shape [N, 28, 28], found ",
              at::IntArrayRef(images.dims), hint());
  TORCH_CHECK(labels.dims.size() == 1, "corrupt Fashion-MNIST file ", labels_path,
              ": expected labels of shape [N], found ", at::IntArrayRef(labels.dims), hint());
  TORCH_CHECK(images.dims[0] == labels.dims[0], "corrupt Fashion-MNIST split '", split_name(split), "': ",
              images_path, " holds ", images.dims[0], " images but ", labels_path, " holds ", labels.dims[0],
              " labels", hint());
  const int64_t max_label = labels.data.max().item<int64_t>();
  TORCH_CHECK(max_label < kFashionMnistClasses, "corrupt Fashion-MNIST file ", labels_path, ": label ", max_label,
              " is outside [0, ", kFashionMnistClasses, ")", hint());

  Dataset d;
  d.name = std::string("fashion-mnist/") + split_name(split);
  d.images = images.data.view({images.dims[0], 1, kFashionMnistSide, kFashionMnistSide});
  d.labels = labels.data.to(at::kLong);
  d.classes = kFashionMnistClasses;
  d.mean = kFashionMnistMean;
  d.stddev = kFashionMnistStd;
  d.validate();
  return d;
}

}  // namespace data
}  // namespace lowrank
