#pragma once
// Helpers of the tests in tests/train: temporary directories, IDX files, running the CLI.
#include <ATen/CPUGeneratorImpl.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "lowrank/util/files.h"
#include "lowrank/data/dataset.h"
#include "lowrank/data/fashion_mnist.h"
#include "lowrank/data/idx_reader.h"
#include "lowrank/data/text_corpus.h"

namespace lowrank {
namespace testing {

/// A fresh directory under /tmp, removed (with its contents) when the object dies.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    std::string t = "/tmp/lowrank-test-" + tag + "-XXXXXX";
    std::vector<char> buf(t.begin(), t.end());
    buf.push_back('\0');
    EXPECT_NE(::mkdtemp(buf.data()), nullptr) << "mkdtemp failed for " << t;
    path_ = buf.data();
  }
  ~TempDir() { (void)!std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline bool file_exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

inline std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// The names in `dir` (without . and ..), sorted.
inline std::vector<std::string> list_dir(const std::string& dir) { return list_directory(dir); }

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << "cannot write " << path;
}

inline void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << "cannot write " << path;
  if (!bytes.empty()) ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), int(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

/// An unsigned-byte IDX file's bytes: header for `dims`, then `data`.
inline std::vector<uint8_t> idx_bytes(const std::vector<int64_t>& dims, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out = data::idx_header(dims);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

/// A Fashion-MNIST-layout directory with n_train/n_test 28×28 images (pixel = (i + j) % 256 for
/// image i, pixel j) and labels i % 10.
inline void write_fashion_dir(const std::string& dir, int64_t n_train, int64_t n_test) {
  for (auto split : {std::make_pair(std::string("train"), n_train), std::make_pair(std::string("t10k"), n_test)}) {
    const int64_t n = split.second;
    std::vector<uint8_t> pixels(n * 28 * 28), labels(n);
    for (int64_t i = 0; i < n; ++i) {
      labels[i] = static_cast<uint8_t>(i % 10);
      for (int64_t j = 0; j < 28 * 28; ++j) pixels[i * 784 + j] = static_cast<uint8_t>((i + j) % 256);
    }
    write_gz(dir + "/" + split.first + "-images-idx3-ubyte.gz", idx_bytes({n, 28, 28}, pixels));
    write_gz(dir + "/" + split.first + "-labels-idx1-ubyte.gz", idx_bytes({n}, labels));
  }
}

struct CommandResult {
  int exit_code = -1;   ///< exit status, or 128 + signal
  std::string output;   ///< stdout and stderr together
};

/// Runs `command` through /bin/sh, capturing stdout and stderr.
inline CommandResult run_command(const std::string& command) {
  CommandResult r;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

/// Processes (other than this one) whose environment contains `tag`: a test gives its workers a
/// unique variable and checks that none outlived the launcher.
inline std::vector<int> processes_with_tag(const std::string& tag) {
  std::vector<int> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    const int pid = std::atoi(e->d_name);
    if (pid <= 0 || pid == ::getpid()) continue;
    std::ifstream f(std::string("/proc/") + e->d_name + "/environ", std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    if (ss.str().find(tag) != std::string::npos) out.push_back(pid);
  }
  ::closedir(d);
  return out;
}

/// A synthetic 4-class task: a bright 4×4 block in one of four quadrants of an 8×8 image, over
/// uniform noise. Separable with a wide margin: an MLP learns it in a few epochs.
inline data::Dataset quadrants(int64_t n, uint64_t seed, const std::string& name) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  data::Dataset d;
  d.name = name;
  d.classes = 4;
  d.labels = at::randint(0, 4, {n}, gen, at::kLong);
  d.images = at::randint(0, 60, {n, 1, 8, 8}, gen, at::kLong);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = d.labels[i].item<int64_t>();
    d.images[i][0].narrow(0, (c / 2) * 4, 4).narrow(1, (c % 2) * 4, 4).add_(180);
  }
  d.images = d.images.to(at::kByte);
  d.mean = 0.3;
  d.stddev = 0.3;
  return d;
}

/// The lowrank CLI built next to the tests.
inline std::string lowrank_binary() { return LOWRANK_BINARY; }

/// Seconds after which `timeout` stops a CLI run of a test, so that a hang fails instead of
/// blocking CI.
constexpr int kRunTimeoutSeconds = 240;

/// `env timeout 240 lowrank train args` for run_command.
inline std::string train_cmd(const std::string& args, const std::string& env = "") {
  return env + " timeout " + std::to_string(kRunTimeoutSeconds) + " " + lowrank_binary() + " train " + args;
}

/// Whether Debian's Fashion-MNIST is installed (CLI tests on real data skip without it).
inline bool have_dataset() { return file_exists(data::fashion_mnist_path("", data::Split::kTrain, "images")); }

#define REQUIRE_DATASET()                                                                                \
  if (!::lowrank::testing::have_dataset())                                                               \
  GTEST_SKIP() << "Debian package " << ::lowrank::data::kFashionMnistPackage << " is not installed"

inline bool have_kjv() { return ::access(data::kKjvReader, X_OK) == 0; }

#define REQUIRE_KJV()                                                                                    \
  if (!::lowrank::testing::have_kjv())                                                                   \
  GTEST_SKIP() << "Debian packages " << ::lowrank::data::kKjvPackages << " are not installed"

/// The text cache the tests share (prepared text and tokenizers), next to the lowrank binary, so
/// the tokenizer is trained once per build directory rather than once per test.
inline std::string test_text_cache() {
  const std::string binary = LOWRANK_BINARY;
  return binary.substr(0, binary.find_last_of('/')) + "/test-text-cache";
}

inline void expect_contains(const CommandResult& r, const std::string& needle) {
  EXPECT_NE(r.output.find(needle), std::string::npos) << "expected '" << needle << "' in:\n" << r.output;
}

/// A listening TCP socket on every interface, closed at scope exit.
struct Listener {
  Listener() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
    EXPECT_EQ(::listen(fd, 4), 0);
    socklen_t len = sizeof(sa);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    port = ntohs(sa.sin_port);
  }
  ~Listener() { ::close(fd); }
  int fd = -1;
  int port = 0;
};

/// The message of the c10::Error that fn() throws, or "" when it throws none.
template <typename F>
std::string error_of(F fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.msg();
  }
  return "";
}

}  // namespace testing
}  // namespace lowrank
