#pragma once
// Fingerprints the trainer compares: of the weights (across ranks at the end of a run, and across
// runs) and of the data (across ranks at start-up, and against a checkpoint on resume).
#include <torch/nn/module.h>

#include <cstdint>
#include <string>

#include "lowrank/data/dataset.h"

namespace lowrank {
namespace train {

/// FNV-1a (util/hash.h) over the bytes of every parameter of `module`, in parameter order.
uint64_t weights_checksum(const torch::nn::Module& module);
/// SHA-256 over every parameter and buffer of `module` in order (name, then the raw bytes), as 64
/// hex digits: equal exactly when two runs ended with the same weights.
std::string weights_sha256(const torch::nn::Module& module);
/// "0x" followed by 16 hex digits.
std::string checksum_hex(uint64_t checksum);
/// The dataset's name, shape and a hash of every byte of its examples and labels (of its tokens for
/// text), so that other data under the same name, even with two pixels swapped, is told apart.
/// Checkpoint manifests record it: its value for given data must never change.
std::string data_fingerprint(const data::Dataset& d);

}  // namespace train
}  // namespace lowrank
