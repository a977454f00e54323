#pragma once
// Fashion-MNIST (Xiao, Rasul, Vollgraf 2017, arXiv:1708.07747): 60 000 training and 10 000 test
// grayscale 28×28 images of 10 clothing classes, read from the IDX files that Debian's package
// dataset-fashion-mnist installs under /usr/share/datasets/fashion-mnist:
//   train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
//   t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz
// (an uncompressed file without ".gz" is used when the ".gz" one is absent).
#include <string>

#include "lowrank/data/dataset.h"

namespace lowrank {
namespace data {

constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
constexpr const char* kFashionMnistPackage = "dataset-fashion-mnist";
constexpr int64_t kFashionMnistClasses = 10;
constexpr int64_t kFashionMnistSide = 28;
/// Mean and standard deviation of pixel/255 over the 60 000 training images.
constexpr double kFashionMnistMean = 0.2860;
constexpr double kFashionMnistStd = 0.3530;

/// The path of the images ("images") or labels ("labels") file of `split` under `dir`.
std::string fashion_mnist_path(const std::string& dir, Split split, const std::string& what);

/// Loads `split` from `dir` ("" = kFashionMnistDir). Missing or corrupt files throw, naming the path
/// and the Debian package that provides them.
Dataset load_fashion_mnist(const std::string& dir, Split split);

}  // namespace data
}  // namespace lowrank
