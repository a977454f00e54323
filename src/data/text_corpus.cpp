#include "lowrank/data/text_corpus.h"

#include <c10/util/Exception.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <utility>
#include <vector>

#include "lowrank/util/choices.h"
#include "lowrank/data/file_record.h"
#include "lowrank/util/files.h"

namespace lowrank {
namespace data {
namespace {

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// Holds an exclusive flock on <dir>/.lock for its lifetime.
class DirLock {
 public:
  explicit DirLock(const std::string& dir) {
    const std::string path = dir + "/.lock";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    TORCH_CHECK(fd_ >= 0, "cannot open the lock file ", path, ": ", std::strerror(errno));
    while (::flock(fd_, LOCK_EX) != 0) {
      TORCH_CHECK(errno == EINTR, "cannot lock ", path, ": ", std::strerror(errno));
    }
  }
  ~DirLock() { ::close(fd_); }
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  int fd_ = -1;
};

std::string kjv_hint() {
  return std::string(" (the King James Bible is read with ") + kKjvReader + " from the Debian packages " +
         kKjvPackages + ": apt-get install " + kKjvPackages + "; or use --dataset text --data-dir DIR with " +
         "DIR/train.txt and DIR/val.txt)";
}

// Runs the reader and returns its output: one verse per line, "<Book><chapter>:<verse> <text>".
std::string run_kjv_reader() {
  // LOWRANK_KJV_READER replaces the reader's path (tests use it to play a machine without it).
  const char* env = std::getenv("LOWRANK_KJV_READER");
  const std::string reader = env && *env ? env : kKjvReader;
  TORCH_CHECK(::access(reader.c_str(), X_OK) == 0, "cannot run ", reader, ": ", std::strerror(errno), kjv_hint());
  // -f: one verse per line; -l: no wrapping within a verse.
  const std::string cmd = reader + " -f -l1000000 Gen1:1-Rev22:21 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  TORCH_CHECK(p, "cannot run ", cmd, ": ", std::strerror(errno), kjv_hint());
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  TORCH_CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0, cmd, " failed (status ", status, "): ",
              out.substr(0, 300), kjv_hint());
  return out;
}

// Splits the reader's output into train and validation text, one verse per line (without the
// reference). Throws when the output does not look like the whole Bible.
std::pair<std::string, std::string> split_kjv(const std::string& all) {
  std::istringstream in(all);
  std::string line, chapter, train, val;
  int64_t chapters = 0, verses = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const size_t space = line.find(' '), colon = line.find(':');
    TORCH_CHECK(space != std::string::npos && colon != std::string::npos && colon < space,
                "unexpected line ", verses + 1, " from ", kKjvReader, ": '", line.substr(0, 80), "'", kjv_hint());
    const std::string here = line.substr(0, colon);  // book and chapter, e.g. "1Sa3"
    if (here != chapter) {
      chapter = here;
      ++chapters;
    }
    ++verses;
    (chapters % kKjvValidationEvery == 0 ? val : train) += line.substr(space + 1) + "\n";
  }
  TORCH_CHECK(chapters == 1189 && verses == 31102, kKjvReader, " printed ", verses, " verses in ", chapters,
              " chapters, not the King James Bible's 31102 in 1189", kjv_hint());
  return {train, val};
}

std::string fnv_hex(const std::string& s) {
  char buf[20];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(digest_of(s).hash));
  return buf;
}

std::string absolute(const std::string& path) {
  char* real = ::realpath(path.c_str(), nullptr);
  TORCH_CHECK(real, "cannot resolve ", path, ": ", std::strerror(errno));
  std::string out(real);
  std::free(real);
  return out;
}

const char* split_file(Split split) { return split == Split::kTrain ? "train.txt" : "val.txt"; }

std::string tokenizer_tag(const TextOptions& o) {
  return o.tokenizer == "byte" ? "byte" : "sp-bpe-" + std::to_string(o.vocab_size);
}

std::string tokens_path(const std::string& cache, Split split, const TextOptions& o) {
  return cache + "/" + (split == Split::kTrain ? "train" : "val") + "." + tokenizer_tag(o) + ".tokens";
}

// A split's text: its bytes, where they are read from, and their digest.
struct SourceText {
  std::string path, bytes;
  FileDigest digest;
};

// Throws naming `path` when it holds no line with text (empty, or newlines and blanks only).
void check_has_text(const std::string& path, const std::string& bytes, const std::string& hint) {
  TORCH_CHECK(bytes.find_first_not_of(" \t\r\n") != std::string::npos, path, " is empty (", bytes.size(),
              " bytes, no line with text)", hint);
}

// The kjv cache's train.txt and val.txt as sources, their bytes moved in.
std::pair<SourceText, SourceText> kjv_split_sources(const std::string& cache, std::string& train,
                                                     std::string& val) {
  auto source = [&](const char* name, std::string& bytes) {
    SourceText t{cache + "/" + name, std::move(bytes), {}};
    t.digest = digest_of(t.bytes);
    return t;
  };
  return {source("train.txt", train), source("val.txt", val)};
}

// The King James Bible's train.txt and val.txt in `cache`, checked against their records and
// rebuilt from the reader (with kjv.txt) when any of the three is missing or stale. Without the
// reader, stale training or validation text is refused naming the file; a stale kjv.txt (kept for
// reference, read by nothing) is then left as it is.
std::pair<SourceText, SourceText> kjv_sources(const std::string& cache) {
  std::vector<std::optional<std::string>> got;  // train.txt, val.txt, kjv.txt
  std::vector<bool> unrecorded;                   // exists, but written before records existed
  std::string stale;
  for (const char* name : {"train.txt", "val.txt", "kjv.txt"}) {
    std::string why;
    got.push_back(read_recorded(cache + "/" + name, {}, &why));
    unrecorded.push_back(!got.back() && exists(cache + "/" + name) && !exists(record_path(cache + "/" + name)));
    if (!got.back() && stale.empty() && exists(cache + "/" + name)) stale = cache + "/" + name + " " + why;
  }
  if (!got[0] || !got[1] || !got[2]) {
    std::string all;
    try {
      all = run_kjv_reader();
    } catch (const c10::Error& e) {
      // A cache an older lowrank prepared (no records) on a machine with the reader, used where the
      // reader is not installed (a cluster's compute nodes): adopted as it is, with a warning, since
      // nothing here can check it. A record that disagrees is still refused.
      for (int i = 0; i < 2; ++i)
        if (!got[i] && unrecorded[i]) {
          const std::string path = cache + (i == 0 ? "/train.txt" : "/val.txt");
          std::string bytes = read_file(path, "");
          check_has_text(path, bytes, "");
          write_record(path, bytes, {});
          std::cerr << "warning: " << path << " was cached by an older lowrank without a record, and the Bible "
                    << "reader is not installed to check it (" << e.msg() << "): it is used as it is, and recorded"
                    << std::endl;
          got[i] = std::move(bytes);
        }
      if (got[0] && got[1]) return kjv_split_sources(cache, *got[0], *got[1]);
      if (stale.empty()) throw;
      TORCH_CHECK(false, "the cached ", stale, ", and it cannot be rebuilt: ", e.msg());
    }
    const auto parts = split_kjv(all);
    write_recorded(cache + "/kjv.txt", all, {});
    write_recorded(cache + "/val.txt", parts.second, {});
    write_recorded(cache + "/train.txt", parts.first, {});
    got = {parts.first, parts.second, all};
  }
  return kjv_split_sources(cache, *got[0], *got[1]);
}

// The user's DIR/train.txt and DIR/val.txt (--dataset text).
std::pair<SourceText, SourceText> user_sources(const std::string& data_dir) {
  const std::string hint = " (--dataset text needs plain UTF-8 text in " + data_dir + "/train.txt and " + data_dir +
                           "/val.txt, one passage per line)";
  std::vector<SourceText> out;
  for (Split split : {Split::kTrain, Split::kTest}) {
    SourceText t;
    t.path = data_dir + "/" + split_file(split);
    t.bytes = read_file(t.path, hint);
    check_has_text(t.path, t.bytes, hint);
    t.digest = digest_of(t.bytes);
    out.push_back(std::move(t));
  }
  return {std::move(out[0]), std::move(out[1])};
}

// The tokenizer, trained on the training text when its model is missing or stale (its record names
// the training text it was trained on). `*model_digest`: the model file's digest (none for bytes).
std::unique_ptr<Tokenizer> open_tokenizer(const std::string& cache, const SourceText& train, const TextOptions& o,
                                          RecordInputs* model_digest) {
  if (o.tokenizer == "byte") return make_byte_tokenizer();
  const std::string model = cache + "/" + tokenizer_tag(o) + ".model";
  const RecordInputs inputs = {{"source train.txt", train.digest}};
  std::optional<std::string> bytes = read_recorded(model, inputs);
  if (!bytes) {
    train_sentencepiece(train.path, o.vocab_size, model);
    bytes = read_file(model, "");
    write_record(model, *bytes, inputs);
  }
  model_digest->push_back({"tokenizer " + tokenizer_tag(o), digest_of(*bytes)});
  return load_sentencepiece(model);
}

// Token ids of the text, encoded line by line into one stream (a byte tokenizer keeps the
// newlines), as the bytes of int32 little-endian values.
std::string encode_text(const SourceText& text, const Tokenizer& tok, bool bytes) {
  std::istringstream in(text.bytes);
  std::string line, out;
  std::vector<int32_t> ids;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto piece = tok.encode(bytes ? line + "\n" : line);
    ids.insert(ids.end(), piece.begin(), piece.end());
  }
  TORCH_CHECK(ids.size() >= 2, text.path, " holds too little text: ", ids.size(), " token(s), at least 2 needed");
  out.assign(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(int32_t));
  return out;
}

// Everything a text corpus needs, checked against the records and rebuilt where stale, all under
// the cache directory's lock: the tokenizer and both splits' token bytes.
struct Prepared {
  std::unique_ptr<Tokenizer> tokenizer;
  std::string tokens[2];  // [0] training, [1] validation
  std::string paths[2];   // the token files
  std::string texts[2];   // the text files they were made from
};

Prepared prepare(const std::string& corpus, const std::string& data_dir, const TextOptions& o) {
  check_tokenizer_name(o.tokenizer);
  TORCH_CHECK(o.seq_len >= 1, "seq_len (--seq-len) must be >= 1, got ", o.seq_len);
  if (corpus == "text")
    for (const char* f : {"train.txt", "val.txt"})
      TORCH_CHECK(::access((data_dir + "/" + f).c_str(), R_OK) == 0, "--dataset text: cannot read ", data_dir, "/",
                  f, ": ", std::strerror(errno), " (--data-dir must hold train.txt and val.txt, plain UTF-8 text)");
  const std::string cache = text_cache_dir(corpus, data_dir, o);
  try {
    make_directories(cache);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, e.msg(), " (the text cache: set LOWRANK_CACHE_DIR or --cache-dir to a writable directory)");
  }
  DirLock lock(cache);
  const auto sources = corpus == "kjv" ? kjv_sources(cache) : user_sources(data_dir);
  Prepared p;
  RecordInputs tokenizer_digest;
  p.tokenizer = open_tokenizer(cache, sources.first, o, &tokenizer_digest);
  for (Split split : {Split::kTrain, Split::kTest}) {
    const int i = split == Split::kTrain ? 0 : 1;
    const SourceText& text = i == 0 ? sources.first : sources.second;
    RecordInputs inputs = {{std::string("source ") + split_file(split), text.digest}};
    inputs.insert(inputs.end(), tokenizer_digest.begin(), tokenizer_digest.end());
    p.paths[i] = tokens_path(cache, split, o);
    p.texts[i] = text.path;
    std::optional<std::string> bytes = read_recorded(p.paths[i], inputs);
    if (!bytes) {
      bytes = encode_text(text, *p.tokenizer, o.tokenizer == "byte");
      write_recorded(p.paths[i], *bytes, inputs);
    }
    p.tokens[i] = std::move(*bytes);
  }
  return p;
}

}  // namespace

std::string default_text_cache_dir() {
  if (const char* d = std::getenv("LOWRANK_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return std::string(d) + "/lowrank";
  if (const char* d = std::getenv("HOME"); d && *d) return std::string(d) + "/.cache/lowrank";
  return "/tmp/lowrank-cache";
}

std::vector<std::string> text_corpus_names() { return {"kjv", "text"}; }

bool is_text_corpus(const std::string& name) { return name == "kjv" || name == "text"; }

std::string text_cache_dir(const std::string& corpus, const std::string& data_dir, const TextOptions& options) {
  check_choice("text corpus", corpus, text_corpus_names());
  const std::string root = options.cache_dir.empty() ? default_text_cache_dir() : options.cache_dir;
  if (corpus == "kjv") return root + "/kjv";
  TORCH_CHECK(!data_dir.empty(), "--dataset text needs --data-dir DIR holding train.txt and val.txt");
  // Keyed by the directory and its two files' sizes and times, so edited text is prepared anew.
  const std::string dir = absolute(data_dir);
  std::string key = dir;
  for (const char* f : {"/train.txt", "/val.txt"}) {
    struct stat st {};
    if (::stat((dir + f).c_str(), &st) == 0)
      key += std::string(f) + std::to_string(st.st_size) + ":" + std::to_string(st.st_mtime);
  }
  const std::size_t slash = dir.find_last_of('/');
  return root + "/text-" + dir.substr(slash + 1) + "-" + fnv_hex(key).substr(0, 12);
}

std::unique_ptr<Tokenizer> prepare_text(const std::string& corpus, const std::string& data_dir,
                                        const TextOptions& o) {
  return prepare(corpus, data_dir, o).tokenizer;
}

Dataset load_text_corpus(const std::string& corpus, const std::string& data_dir, Split split,
                         const TextOptions& o) {
  Prepared p = prepare(corpus, data_dir, o);
  const auto& tok = p.tokenizer;
  const std::string& path = p.paths[split == Split::kTrain ? 0 : 1];
  const std::string& bytes = p.tokens[split == Split::kTrain ? 0 : 1];
  TORCH_CHECK(bytes.size() % sizeof(int32_t) == 0 && bytes.size() >= 2 * sizeof(int32_t), "corrupt token file ",
              path, " (", bytes.size(), " bytes; delete it to have it rebuilt)");
  const int64_t n = static_cast<int64_t>(bytes.size() / sizeof(int32_t));
  at::Tensor stream = at::empty({n}, at::kInt);
  std::memcpy(stream.data_ptr(), bytes.data(), bytes.size());
  stream = stream.to(at::kLong);
  const int64_t lo = stream.min().item<int64_t>(), hi = stream.max().item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < tok->vocab_size(), "corrupt token file ", path, ": ids in [", lo, ", ", hi,
              "] outside the tokenizer's [0, ", tok->vocab_size(), ") (delete it to have it rebuilt)");
  const int64_t T = o.seq_len, windows = (n - 1) / T;
  TORCH_CHECK(windows >= 1, "the ", split == Split::kTrain ? "training" : "validation", " text of '", corpus, "' (",
              p.texts[split == Split::kTrain ? 0 : 1], ") is too short: ", n, " tokens, fewer than one window of "
              "--seq-len ", T, " + 1");
  Dataset d;
  d.name = corpus + "/" + (split == Split::kTrain ? "train" : "val");
  d.tokens = stream.as_strided({windows, T + 1}, {T, 1}).clone();
  d.classes = tok->vocab_size();
  d.tokenizer = tok->describe();
  return d;
}

}  // namespace data
}  // namespace lowrank
