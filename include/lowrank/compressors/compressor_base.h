#pragma once
// CompressorBase<Self, Options>: what every compressor shares, derived from its options' one field
// list (util/fields.h): the registry's factory create(config), name(), describe() and options().
// A compressor then writes only its algorithm (traits, floats on the wire, compress()):
//
//   struct MyOptions {
//     TORCH_ARG(int64_t, rank) = 1;
//     template <typename Self, typename V>
//     static void fields(Self& o, V&& v) { v("rank", o.rank_); }
//     void validate() const;                       // TORCH_CHECK naming the field and the value
//   };
//   class My : public CompressorBase<My, MyOptions> {
//    public:
//     static constexpr const char* kName = "my";
//     using CompressorBase::CompressorBase;
//     ...
//   };
//   // src/compressors/registry.cpp: {"my", "one line of help", My::create},
#include <memory>
#include <ostream>
#include <string>
#include <utility>

#include "lowrank/compressors/compressor.h"
#include "lowrank/util/config.h"
#include "lowrank/util/fields.h"

namespace lowrank {

/// The options of a compressor that has none ("none", "noop").
struct NoOptions {
  template <typename Self, typename V>
  static void fields(Self& /*o*/, V&& /*v*/) {}
  void validate() const {}
};

/// `Options` read from `config` by its field list: keys it does not name keep their defaults, and a
/// bad choice throws "<compressor>: <key> '<value>' is not one of ...". Not validated.
template <typename Options>
Options options_from_config(const Config& config, const std::string& compressor) {
  return read_fields(config, Options{}, compressor + ": ");
}

/// "name(key=value ...)" of the shown fields, or "name" alone when no field is shown. Checkpoints
/// store it and compare it on load, so it must not change for given options.
template <typename Options>
std::string describe_compressor(const std::string& name, const Options& options) {
  const std::string fields = render_fields(options);
  return fields.empty() ? name : name + "(" + fields + ")";
}

template <typename Self, typename Options>
class CompressorBase : public Compressor {
 public:
  /// Validates `options` (Options::validate()).
  explicit CompressorBase(Options options) : options_(std::move(options)) { options_.validate(); }
  /// The registry's factory: Self built from the options `config` names.
  static std::unique_ptr<Compressor> create(const Config& config) {
    return std::make_unique<Self>(options_from_config<Options>(config, Self::kName));
  }

  std::string name() const override { return Self::kName; }
  std::string describe() const override { return describe_compressor(Self::kName, options_); }
  const Options& options() const { return options_; }

 protected:
  Options options_;
};

}  // namespace lowrank
