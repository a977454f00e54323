// lowrank's SentencePiece module: a C interface over libsentencepiece, loaded by
// src/data/tokenizer.cpp with dlopen(RTLD_LOCAL | RTLD_DEEPBIND).
//
// Why a module: Debian's libsentencepiece embeds its own copy of protobuf-lite and exports its
// symbols, while LibTorch loads the system libprotobuf. Linked into one executable, the two
// protobufs interpose each other's symbols and the process crashes in a static initializer before
// main(). Loaded locally and deep-bound, the module and libsentencepiece resolve their protobuf
// symbols among themselves and torch's protobuf never sees them.
//
// Every function catches everything: no C++ exception crosses the C boundary. Errors are returned
// as a nonzero status with the message copied into `err`.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

void put_error(char* err, size_t len, const std::string& msg) {
  if (!err || len == 0) return;
  std::strncpy(err, msg.c_str(), len - 1);
  err[len - 1] = '\0';
}

}  // namespace

extern "C" {

int lowrank_spm_version() { return 1; }

void* lowrank_spm_load(const char* file, char* err, size_t errlen) {
  try {
    auto* sp = new sentencepiece::SentencePieceProcessor();
    const auto status = sp->Load(file);
    if (!status.ok()) {
      put_error(err, errlen, status.ToString());
      delete sp;
      return nullptr;
    }
    return sp;
  } catch (const std::exception& e) {
    put_error(err, errlen, e.what());
    return nullptr;
  }
}

void lowrank_spm_free(void* handle) { delete static_cast<sentencepiece::SentencePieceProcessor*>(handle); }

int lowrank_spm_vocab_size(void* handle) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->GetPieceSize();
}

// On success *ids is malloc'ed (free with lowrank_spm_free_buffer) and holds *n ids.
int lowrank_spm_encode(void* handle, const char* text, size_t len, int** ids, size_t* n, char* err, size_t errlen) {
  try {
    std::vector<int> out;
    const auto status = static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Encode(
        std::string(text, len), &out);
    if (!status.ok()) {
      put_error(err, errlen, status.ToString());
      return 1;
    }
    *n = out.size();
    *ids = static_cast<int*>(std::malloc(sizeof(int) * (out.empty() ? 1 : out.size())));
    if (!*ids) {
      put_error(err, errlen, "out of memory");
      return 1;
    }
    std::memcpy(*ids, out.data(), sizeof(int) * out.size());
    return 0;
  } catch (const std::exception& e) {
    put_error(err, errlen, e.what());
    return 1;
  }
}

// On success *text is malloc'ed (free with lowrank_spm_free_buffer) and holds *len bytes.
int lowrank_spm_decode(void* handle, const int* ids, size_t n, char** text, size_t* len, char* err, size_t errlen) {
  try {
    std::string out;
    const auto status =
        static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Decode(std::vector<int>(ids, ids + n), &out);
    if (!status.ok()) {
      put_error(err, errlen, status.ToString());
      return 1;
    }
    *len = out.size();
    *text = static_cast<char*>(std::malloc(out.size() + 1));
    if (!*text) {
      put_error(err, errlen, "out of memory");
      return 1;
    }
    std::memcpy(*text, out.data(), out.size());
    return 0;
  } catch (const std::exception& e) {
    put_error(err, errlen, e.what());
    return 1;
  }
}

void lowrank_spm_free_buffer(void* p) { std::free(p); }

int lowrank_spm_train(const char* args, char* err, size_t errlen) {
  try {
    const auto status = sentencepiece::SentencePieceTrainer::Train(args);
    if (!status.ok()) {
      put_error(err, errlen, status.ToString());
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    put_error(err, errlen, e.what());
    return 1;
  }
}

}  // extern "C"
