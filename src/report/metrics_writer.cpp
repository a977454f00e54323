#include "lowrank/report/metrics_writer.h"

#include <c10/util/Exception.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

namespace lowrank {
namespace report {

std::string floats_text(int64_t bytes) {
  static const char* const kFractions[] = {"", ".25", ".5", ".75"};
  return std::to_string(bytes / 4) + kFractions[bytes % 4];
}

const char* MetricsWriter::header() {
  return "step,epoch,train_loss,lr,step_ms,floats_sent,bytes_sent,dense_floats,compression_ratio,relative_error,"
         "ef_norm,test_accuracy,elapsed_s,skipped_steps,val_loss,val_perplexity,row_bytes,mean_rank";
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
  if (!kept.empty()) {  // bytes_sent, the 7th column of the last kept row, for the next row_bytes
    std::stringstream cells(kept.back());
    std::string cell;
    for (int c = 0; c < 7 && std::getline(cells, cell, ','); ++c) {
    }
    last_bytes_ = std::strtoll(cell.c_str(), nullptr, 10);
  }
  rows_ = static_cast<int64_t>(kept.size());
  out_.flush();
}

MetricsWriter::~MetricsWriter() = default;

void MetricsWriter::write(const train::MetricsRow& r) {
  TORCH_CHECK(!closed_, "MetricsWriter: write() after close()");
  out_ << r.step << "," << r.epoch << "," << std::setprecision(6) << r.train_loss << "," << r.lr << "," << std::fixed
       << std::setprecision(3) << r.step_ms << "," << floats_text(r.bytes_sent) << "," << r.bytes_sent << ","
       << floats_text(r.dense_bytes) << "," << std::setprecision(4) << r.compression_ratio << "," << std::defaultfloat
       << std::setprecision(6) << r.relative_error << "," << r.ef_norm << ",";
  if (r.test_accuracy >= 0) out_ << r.test_accuracy;
  out_ << "," << std::fixed << std::setprecision(3) << r.elapsed_s << std::defaultfloat << "," << r.skipped_steps
       << "," << std::setprecision(6);
  if (r.val_loss >= 0) out_ << r.val_loss;
  out_ << ",";
  if (r.val_perplexity >= 0) out_ << r.val_perplexity;
  out_ << "," << r.bytes_sent - last_bytes_ << ",";
  if (r.mean_rank > 0) out_ << r.mean_rank;
  out_ << "\n";
  last_bytes_ = r.bytes_sent;
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

}  // namespace report
}  // namespace lowrank
