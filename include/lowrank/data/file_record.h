#pragma once
// Cached files checked against a record of what they hold (the text cache, text_corpus.h).
//
// Next to each prepared file <path> lies <path>.record, a few lines of text: the file's size and
// 64-bit FNV-1a hash, then the name, size and hash of every input it was made from (the source
// text, the tokenizer). read_recorded() returns the file's bytes only when the file, its record and
// the inputs given now all agree, so a truncated or edited file, a file left without its record by
// a crash or an older lowrank, and a file made from text that has since changed (even at the same
// size and time) are all seen as stale, and the caller rebuilds them. The hash guards against
// accidents, not against someone forging a file: FNV-1a is no cryptographic hash.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lowrank {
namespace data {

struct FileDigest {
  int64_t size = 0;
  uint64_t hash = 0;  ///< FNV-1a, 64 bits
  bool operator==(const FileDigest& o) const { return size == o.size && hash == o.hash; }
};

/// Size and hash of `bytes` (about 1 ms per MB).
FileDigest digest_of(const std::string& bytes);
/// "1234 bytes, fnv1a64 0123456789abcdef".
std::string to_string(const FileDigest& d);

/// What a file was made from: (name, digest) pairs, e.g. {"source train.txt", digest}.
using RecordInputs = std::vector<std::pair<std::string, FileDigest>>;

/// The bytes of `path` when it and `path`.record exist, the record names exactly these bytes and
/// exactly `inputs`; otherwise nullopt, with the reason in `*why` (when given), e.g. "is 10 bytes,
/// its record says 20 (truncated or edited?)" or "was made from another source train.txt".
std::optional<std::string> read_recorded(const std::string& path, const RecordInputs& inputs,
                                         std::string* why = nullptr);
/// Writes `bytes` to `path`, then its record, each through a temporary file and a rename.
void write_recorded(const std::string& path, const std::string& bytes, const RecordInputs& inputs);
/// Writes only the record of `path` (a file another function wrote, holding `bytes`).
void write_record(const std::string& path, const std::string& bytes, const RecordInputs& inputs);
/// The record's file name: path + ".record".
std::string record_path(const std::string& path);

}  // namespace data
}  // namespace lowrank
