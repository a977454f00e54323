#pragma once
// MetricsWriter: metrics.csv of a training run, one row (train/metrics_row.h) per logged step.
//
// Rows are appended (and flushed) to <dir>/metrics.csv.partial while the run lasts; close()
// renames the file to metrics.csv, so a metrics.csv is always complete and a run that failed
// leaves only the .partial file behind for diagnosis.
#include <cstdint>
#include <fstream>
#include <string>

#include "lowrank/train/metrics_row.h"
#include "lowrank/util/files.h"  // make_directories, write_file_atomically

namespace lowrank {
namespace report {

/// bytes / 4, the "floats" of metrics.csv and compare.csv, written exactly: an integer, or with .25,
/// .5 or .75 where 16-bit or packed payloads leave a remainder.
std::string floats_text(int64_t bytes);

class MetricsWriter : public train::MetricsSink {
 public:
  /// Creates `dir` (with parents) and starts <dir>/metrics.csv.partial with the header line.
  /// With resume_step >= 0 (a resumed run), first copies the rows of steps <= resume_step from the
  /// interrupted run's metrics.csv.partial (or metrics.csv) in `dir`, so the file continues.
  explicit MetricsWriter(std::string dir, int64_t resume_step = -1);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  void write(const train::MetricsRow& row) override;
  /// Renames the file to metrics.csv. Rows can no longer be written.
  void close();
  int64_t rows() const { return rows_; }
  static const char* header();

 private:
  std::string dir_;
  std::ofstream out_;
  int64_t rows_ = 0;
  int64_t last_bytes_ = 0;  ///< bytes_sent of the row before (row_bytes = the difference)
  bool closed_ = false;
};


}  // namespace report
}  // namespace lowrank
