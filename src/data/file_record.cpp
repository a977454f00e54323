#include "lowrank/data/file_record.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "lowrank/util/files.h"
#include "lowrank/util/hash.h"

namespace lowrank {
namespace data {
namespace {

constexpr const char* kRecordHeader = "lowrank file record 1";

std::string hex(uint64_t h) {
  char buf[20];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string file_line(const FileDigest& d) { return "file " + std::to_string(d.size) + " " + hex(d.hash); }

std::string input_line(const std::pair<std::string, FileDigest>& in) {
  return "input " + std::to_string(in.second.size) + " " + hex(in.second.hash) + " " + in.first;
}

std::string render(const FileDigest& file, const RecordInputs& inputs) {
  std::string out = std::string(kRecordHeader) + "\n" + file_line(file) + "\n";
  for (const auto& in : inputs) out += input_line(in) + "\n";
  return out;
}

// Why `recorded` (a record's text) is not `expected`, in words.
std::string mismatch(const std::string& recorded, const FileDigest& file, const RecordInputs& inputs) {
  std::istringstream is(recorded);
  std::string header, line;
  std::getline(is, header);
  if (header != kRecordHeader) return "has a record of another format";
  std::getline(is, line);
  long long size = -1;
  char h[32] = "";
  if (std::sscanf(line.c_str(), "file %lld %31s", &size, h) != 2) return "has an unreadable record";
  if (size != file.size)
    return "is " + std::to_string(file.size) + " bytes, its record says " + std::to_string(size) +
           " (truncated or edited?)";
  if (h != hex(file.hash)) return "does not hold the bytes its record names (edited or damaged?)";
  for (const auto& in : inputs)
    if (recorded.find("\n" + input_line(in) + "\n") == std::string::npos)
      return "was made from another " + in.first + " than the one now given";
  return "was made from inputs no longer given";
}

}  // namespace

FileDigest digest_of(const std::string& bytes) {
  return {static_cast<int64_t>(bytes.size()), fnv1a(bytes)};
}

std::string to_string(const FileDigest& d) { return std::to_string(d.size) + " bytes, fnv1a64 " + hex(d.hash); }

std::string record_path(const std::string& path) { return path + ".record"; }

std::optional<std::string> read_recorded(const std::string& path, const RecordInputs& inputs, std::string* why) {
  auto say = [why](const std::string& reason) {
    if (why) *why = reason;
    return std::nullopt;
  };
  std::optional<std::string> bytes = try_read_file(path);
  if (!bytes) return say("does not exist or cannot be read");
  const std::optional<std::string> recorded = try_read_file(record_path(path));
  if (!recorded) return say("has no record " + record_path(path));
  const FileDigest d = digest_of(*bytes);
  if (*recorded != render(d, inputs)) return say(mismatch(*recorded, d, inputs));
  return bytes;
}

void write_record(const std::string& path, const std::string& bytes, const RecordInputs& inputs) {
  write_file_atomically(record_path(path), render(digest_of(bytes), inputs));
}

void write_recorded(const std::string& path, const std::string& bytes, const RecordInputs& inputs) {
  write_file_atomically(path, bytes);
  write_record(path, bytes, inputs);
}

}  // namespace data
}  // namespace lowrank
