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
#include <sstream>

#include "lowrank/choices.h"
#include "lowrank/files.h"

namespace lowrank {
namespace data {
namespace {

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

std::string read_file(const std::string& path, const std::string& hint) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "cannot read ", path, ": ", std::strerror(errno), hint);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

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
  TORCH_CHECK(::access(kKjvReader, X_OK) == 0, "cannot run ", kKjvReader, ": ", std::strerror(errno), kjv_hint());
  // -f: one verse per line; -l: no wrapping within a verse.
  const std::string cmd = std::string(kKjvReader) + " -f -l1000000 Gen1:1-Rev22:21 2>&1";
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
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  char buf[20];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string absolute(const std::string& path) {
  char* real = ::realpath(path.c_str(), nullptr);
  TORCH_CHECK(real, "cannot resolve ", path, ": ", std::strerror(errno));
  std::string out(real);
  std::free(real);
  return out;
}

// Where the split's text is: in the cache (kjv) or the user's directory (text).
std::string text_path(const std::string& corpus, const std::string& data_dir, const std::string& cache,
                      Split split) {
  const std::string file = split == Split::kTrain ? "train.txt" : "val.txt";
  return corpus == "kjv" ? cache + "/" + file : data_dir + "/" + file;
}

std::string tokenizer_tag(const TextOptions& o) {
  return o.tokenizer == "byte" ? "byte" : "sp-bpe-" + std::to_string(o.vocab_size);
}

std::unique_ptr<Tokenizer> open_tokenizer(const std::string& cache, const std::string& train_text,
                                          const TextOptions& o) {
  if (o.tokenizer == "byte") return make_byte_tokenizer();
  const std::string model = cache + "/" + tokenizer_tag(o) + ".model";
  if (!exists(model)) train_sentencepiece(train_text, o.vocab_size, model);
  return load_sentencepiece(model);
}

std::string tokens_path(const std::string& cache, Split split, const TextOptions& o) {
  return cache + "/" + (split == Split::kTrain ? "train" : "val") + "." + tokenizer_tag(o) + ".tokens";
}

// Encodes the text file line by line into one stream (a byte tokenizer keeps the newlines).
std::string encode_file(const std::string& path, const Tokenizer& tok, bool bytes) {
  const std::string text = read_file(path, "");
  std::istringstream in(text);
  std::string line, out;
  std::vector<int32_t> ids;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto piece = tok.encode(bytes ? line + "\n" : line);
    ids.insert(ids.end(), piece.begin(), piece.end());
  }
  TORCH_CHECK(ids.size() >= 2, path, " holds no text to train on");
  out.assign(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(int32_t));
  return out;
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
  if (corpus == "kjv" && (!exists(cache + "/train.txt") || !exists(cache + "/val.txt"))) {
    const std::string all = run_kjv_reader();
    const auto parts = split_kjv(all);
    write_file_atomically(cache + "/kjv.txt", all);
    write_file_atomically(cache + "/val.txt", parts.second);
    write_file_atomically(cache + "/train.txt", parts.first);
  }
  const std::string train_text = text_path(corpus, data_dir, cache, Split::kTrain);
  auto tok = open_tokenizer(cache, train_text, o);
  for (Split split : {Split::kTrain, Split::kTest}) {
    const std::string path = tokens_path(cache, split, o);
    if (!exists(path))
      write_file_atomically(path, encode_file(text_path(corpus, data_dir, cache, split), *tok, o.tokenizer == "byte"));
  }
  return tok;
}

Dataset load_text_corpus(const std::string& corpus, const std::string& data_dir, Split split,
                         const TextOptions& o) {
  auto tok = prepare_text(corpus, data_dir, o);
  const std::string cache = text_cache_dir(corpus, data_dir, o);
  const std::string path = tokens_path(cache, split, o);
  const std::string bytes = read_file(path, corpus == "kjv" ? kjv_hint() : std::string());
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
  TORCH_CHECK(windows >= 1, "the ", split == Split::kTrain ? "training" : "validation", " text of '", corpus,
              "' has ", n, " tokens, fewer than one window of --seq-len ", T, " + 1");
  Dataset d;
  d.name = corpus + "/" + (split == Split::kTrain ? "train" : "val");
  d.tokens = stream.as_strided({windows, T + 1}, {T, 1}).clone();
  d.classes = tok->vocab_size();
  d.tokenizer = tok->describe();
  return d;
}

}  // namespace data
}  // namespace lowrank
