#include "lowrank/data/tokenizer.h"

#include <c10/util/Exception.h>
#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>

#include "lowrank/util/choices.h"

namespace lowrank {
namespace data {

std::vector<std::string> tokenizer_names() { return {"sentencepiece", "byte"}; }

void check_tokenizer_name(const std::string& name) { check_choice("tokenizer", name, tokenizer_names()); }

namespace {

// libsentencepiece is reached through lowrank's SentencePiece module
// (src/data/sentencepiece_module/module.cpp says why), loaded once.
struct SpmModule {
  void* (*load)(const char*, char*, size_t) = nullptr;
  void (*free)(void*) = nullptr;
  int (*vocab_size)(void*) = nullptr;
  int (*encode)(void*, const char*, size_t, int**, size_t*, char*, size_t) = nullptr;
  int (*decode)(void*, const int*, size_t, char**, size_t*, char*, size_t) = nullptr;
  void (*free_buffer)(void*) = nullptr;
  int (*train)(const char*, char*, size_t) = nullptr;
};

std::string executable_dir() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string path(buf, static_cast<size_t>(n));
  return path.substr(0, path.find_last_of('/'));
}

const SpmModule& spm() {
  static SpmModule m;
  static std::once_flag once;
  std::call_once(once, [] {
    const std::string name = kSentencePieceModule;
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("LOWRANK_SENTENCEPIECE_MODULE"); env && *env) candidates.push_back(env);
    const std::string exe = executable_dir();
    for (const std::string& dir : {exe, exe + "/..", exe + "/../lib/lowrank", exe + "/../lib64/lowrank"})
      candidates.push_back(dir + "/" + name);
#ifdef LOWRANK_SPM_MODULE_BUILD_PATH
    candidates.push_back(LOWRANK_SPM_MODULE_BUILD_PATH);
#endif
#ifdef LOWRANK_SPM_MODULE_INSTALL_PATH
    candidates.push_back(LOWRANK_SPM_MODULE_INSTALL_PATH);
#endif
    void* handle = nullptr;
    std::string tried, last_error;
    for (const auto& c : candidates) {
      if (::access(c.c_str(), F_OK) != 0) {
        tried += (tried.empty() ? "" : ", ") + c;
        continue;
      }
      handle = ::dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (handle) break;
      last_error = ::dlerror();
      tried += (tried.empty() ? "" : ", ") + c + " (" + last_error + ")";
    }
    TORCH_CHECK(handle, "cannot load lowrank's SentencePiece module ", name, "; looked for: ", tried,
                ". It is built with lowrank when libsentencepiece-dev is installed (scripts/setup.sh); set "
                "LOWRANK_SENTENCEPIECE_MODULE to its path, or use --tokenizer byte");
    auto sym = [&](const char* s) {
      void* f = ::dlsym(handle, s);
      TORCH_CHECK(f, "lowrank's SentencePiece module lacks ", s, " (a module of another lowrank version?)");
      return f;
    };
    m.load = reinterpret_cast<decltype(m.load)>(sym("lowrank_spm_load"));
    m.free = reinterpret_cast<decltype(m.free)>(sym("lowrank_spm_free"));
    m.vocab_size = reinterpret_cast<decltype(m.vocab_size)>(sym("lowrank_spm_vocab_size"));
    m.encode = reinterpret_cast<decltype(m.encode)>(sym("lowrank_spm_encode"));
    m.decode = reinterpret_cast<decltype(m.decode)>(sym("lowrank_spm_decode"));
    m.free_buffer = reinterpret_cast<decltype(m.free_buffer)>(sym("lowrank_spm_free_buffer"));
    m.train = reinterpret_cast<decltype(m.train)>(sym("lowrank_spm_train"));
  });
  TORCH_CHECK(m.load, "lowrank's SentencePiece module failed to load earlier in this process");
  return m;
}

constexpr size_t kErrLen = 1024;

class ByteTokenizer : public Tokenizer {
 public:
  int64_t vocab_size() const override { return 256; }
  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> out(text.size());
    for (size_t i = 0; i < text.size(); ++i) out[i] = static_cast<unsigned char>(text[i]);
    return out;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string out;
    out.reserve(ids.size());
    for (int32_t id : ids) {
      TORCH_CHECK(id >= 0 && id < 256, "byte tokenizer: id ", id, " is outside [0, 256)");
      out.push_back(static_cast<char>(id));
    }
    return out;
  }
  std::string describe() const override { return "byte (256)"; }
};

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& file) : file_(file) {
    char err[kErrLen] = "";
    handle_ = spm().load(file.c_str(), err, kErrLen);
    TORCH_CHECK(handle_, "cannot load the SentencePiece model ", file, ": ", err,
                " (delete it to have it trained again)");
  }
  ~SentencePieceTokenizer() override { spm().free(handle_); }
  int64_t vocab_size() const override { return spm().vocab_size(handle_); }
  std::vector<int32_t> encode(const std::string& text) const override {
    char err[kErrLen] = "";
    int* ids = nullptr;
    size_t n = 0;
    TORCH_CHECK(spm().encode(handle_, text.data(), text.size(), &ids, &n, err, kErrLen) == 0, "SentencePiece (",
                file_, ") cannot encode text: ", err);
    std::vector<int32_t> out(ids, ids + n);
    spm().free_buffer(ids);
    return out;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    char err[kErrLen] = "";
    char* text = nullptr;
    size_t n = 0;
    const std::vector<int> in(ids.begin(), ids.end());
    TORCH_CHECK(spm().decode(handle_, in.data(), in.size(), &text, &n, err, kErrLen) == 0, "SentencePiece (", file_,
                ") cannot decode: ", err);
    std::string out(text, n);
    spm().free_buffer(text);
    return out;
  }
  std::string describe() const override {
    return "sentencepiece bpe, " + std::to_string(vocab_size()) + " pieces (" + file_ + ")";
  }

 private:
  std::string file_;
  void* handle_ = nullptr;
};

}  // namespace

std::unique_ptr<Tokenizer> make_byte_tokenizer() { return std::make_unique<ByteTokenizer>(); }

void train_sentencepiece(const std::string& text_file, int64_t vocab_size, const std::string& model_file) {
  TORCH_CHECK(vocab_size >= 260 && vocab_size <= 65536, "vocab_size must lie in [260, 65536] for the "
              "SentencePiece tokenizer (its 256 byte pieces and 4 specials come first), got ", vocab_size);
  std::ifstream in(text_file, std::ios::binary);
  TORCH_CHECK(in, "cannot read ", text_file, " to train the tokenizer on");
  std::ostringstream text;
  text << in.rdbuf();
  TORCH_CHECK(text.str().find_first_not_of(" \t\r\n") != std::string::npos, "cannot train the SentencePiece "
              "tokenizer on ", text_file, ": it is empty (", text.str().size(), " bytes, no line with text)");
  TORCH_CHECK(model_file.size() > 6 && model_file.compare(model_file.size() - 6, 6, ".model") == 0,
              "train_sentencepiece: the model file must end in .model, got ", model_file);
  const std::string prefix = model_file.substr(0, model_file.size() - 6) + ".tmp" + std::to_string(::getpid());
  std::ostringstream args;
  // BPE, as LLaMA's tokenizer; byte fallback so that nothing maps to <unk>; one thread and no
  // sampling or shuffling of the input, so that the vocabulary is a function of the text alone.
  args << "--input=" << text_file << " --model_prefix=" << prefix << " --vocab_size=" << vocab_size
       << " --model_type=bpe --character_coverage=1.0 --byte_fallback=true --num_threads=1"
       << " --input_sentence_size=0 --shuffle_input_sentence=false --minloglevel=2"
       << " --max_sentence_length=16384 --split_digits=true";
  char err[kErrLen] = "";
  const int status = spm().train(args.str().c_str(), err, kErrLen);
  std::remove((prefix + ".vocab").c_str());
  if (status != 0) {
    std::remove((prefix + ".model").c_str());
    TORCH_CHECK(false, "training the SentencePiece tokenizer on ", text_file, " failed: ", err, " (", text_file,
                " may be too short for ", vocab_size, " pieces: try a smaller --vocab-size, or --tokenizer byte)");
  }
  if (std::rename((prefix + ".model").c_str(), model_file.c_str()) != 0) {
    std::remove((prefix + ".model").c_str());
    TORCH_CHECK(false, "cannot rename the trained tokenizer to ", model_file);
  }
}

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& model_file) {
  TORCH_CHECK(::access(model_file.c_str(), R_OK) == 0, "the SentencePiece model ", model_file, " does not exist");
  return std::make_unique<SentencePieceTokenizer>(model_file);
}

}  // namespace data
}  // namespace lowrank
