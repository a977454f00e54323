#pragma once
// Config: string options (key=value) handed to a factory (a compressor's, from the CLI or from code).
//
// Factories read the keys they understand with get(); after construction the registry calls
// check_all_used(), so a misspelt or inapplicable option is an error naming the key, the
// compressor and the keys it accepts. get() records the key it read, so one Config must not be
// get() from by several threads at once; make_compressor() works on a private copy and only reads
// the caller's Config, which may therefore be shared.
#include <map>
#include <set>
#include <string>
#include <vector>

namespace lowrank {

class Config {
 public:
  Config() = default;
  Config(std::initializer_list<std::pair<const std::string, std::string>> init) : values_(init) {}

  Config& set(const std::string& key, const std::string& value);
  Config& set(const std::string& key, const char* value) { return set(key, std::string(value)); }
  template <typename T>
  Config& set(const std::string& key, const T& value) { return set(key, std::to_string(value)); }
  bool has(const std::string& key) const { return values_.count(key) > 0; }

  std::string get(const std::string& key, const std::string& fallback) const;
  std::string get(const std::string& key, const char* fallback) const { return get(key, std::string(fallback)); }
  int64_t get(const std::string& key, int64_t fallback) const;
  /// Throws naming the key when the value is no integer or does not fit an int.
  int get(const std::string& key, int fallback) const;
  /// Throws naming the key when the value is no number or not finite (inf, nan, 1e309).
  double get(const std::string& key, double fallback) const;
  bool get(const std::string& key, bool fallback) const;

  /// Throws naming every key that no get() consumed.
  void check_all_used(const std::string& owner) const;
  const std::map<std::string, std::string>& values() const { return values_; }

 private:
  const std::string* find(const std::string& key) const;
  std::map<std::string, std::string> values_;
  mutable std::set<std::string> used_;
};

}  // namespace lowrank
