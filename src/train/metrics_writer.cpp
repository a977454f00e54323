#include "lowrank/train/metrics_writer.h"

#include <c10/util/Exception.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <iomanip>
#include <vector>

namespace lowrank {
namespace train {

void make_directories(const std::string& dir) {
  TORCH_CHECK(!dir.empty(), "output directory name is empty");
  std::string partial;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if (i < dir.size() && dir[i] != '/') continue;
    partial = dir.substr(0, i);
    if (partial.empty()) continue;
    if (::mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST)
      TORCH_CHECK(false, "cannot create output directory ", partial, ": ", std::strerror(errno));
  }
  struct stat st {};
  TORCH_CHECK(::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode), "output path ", dir, " is not a directory");
  TORCH_CHECK(::access(dir.c_str(), W_OK) == 0, "output directory ", dir, " is not writable");
}

void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    TORCH_CHECK(f.good(), "cannot write ", tmp, ": ", std::strerror(errno));
    f << text;
    f.flush();
    TORCH_CHECK(f.good(), "writing ", tmp, " failed: ", std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    TORCH_CHECK(false, "cannot rename ", tmp, " to ", path, ": ", std::strerror(err));
  }
}

const char* MetricsWriter::header() {
  return "step,epoch,train_loss,lr,step_ms,floats_sent,bytes_sent,dense_floats,compression_ratio,relative_error,"
         "ef_norm,test_accuracy,elapsed_s,skipped_steps,val_loss,val_perplexity";
}

MetricsWriter::MetricsWriter(std::string dir, int64_t resume_step) : dir_(std::move(dir)) {
  make_directories(dir_);
  const std::string path = dir_ + "/metrics.csv.partial";
  std::vector<std::string> kept;
  if (resume_step >= 0) {
    std::ifstream old(path);
    if (!old) old.open(dir_ + "/metrics.csv");
    std::string line;
    if (old && std::getline(old, line) && line == header()) {
      while (std::getline(old, line)) {
        if (line.empty()) continue;
        if (std::strtoll(line.c_str(), nullptr, 10) > resume_step) break;
        kept.push_back(line);
      }
    }
  }
  out_.open(path, std::ios::trunc);
  TORCH_CHECK(out_.good(), "cannot write ", path, ": ", std::strerror(errno));
  out_ << header() << "\n";
  for (const auto& l : kept) out_ << l << "\n";
  rows_ = static_cast<int64_t>(kept.size());
  out_.flush();
}

MetricsWriter::~MetricsWriter() = default;

void MetricsWriter::write(const MetricsRow& r) {
  TORCH_CHECK(!closed_, "MetricsWriter: write() after close()");
  out_ << r.step << "," << r.epoch << "," << std::setprecision(6) << r.train_loss << "," << r.lr << "," << std::fixed
       << std::setprecision(3) << r.step_ms << "," << r.floats_sent << "," << 4 * r.floats_sent << ","
       << r.dense_floats << "," << std::setprecision(4) << r.compression_ratio << "," << std::defaultfloat
       << std::setprecision(6) << r.relative_error << "," << r.ef_norm << ",";
  if (r.test_accuracy >= 0) out_ << r.test_accuracy;
  out_ << "," << std::fixed << std::setprecision(3) << r.elapsed_s << std::defaultfloat << "," << r.skipped_steps
       << "," << std::setprecision(6);
  if (r.val_loss >= 0) out_ << r.val_loss;
  out_ << ",";
  if (r.val_perplexity >= 0) out_ << r.val_perplexity;
  out_ << "\n";
  out_.flush();
  TORCH_CHECK(out_.good(), "writing ", dir_, "/metrics.csv.partial failed: ", std::strerror(errno));
  ++rows_;
}

void MetricsWriter::close() {
  if (closed_) return;
  closed_ = true;
  out_.close();
  const std::string from = dir_ + "/metrics.csv.partial", to = dir_ + "/metrics.csv";
  TORCH_CHECK(std::rename(from.c_str(), to.c_str()) == 0, "cannot rename ", from, " to ", to, ": ",
              std::strerror(errno));
}

}  // namespace train
}  // namespace lowrank
