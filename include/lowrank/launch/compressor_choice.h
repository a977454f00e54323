#pragma once
// `--compressor auto` (docs/reports.md, "Choosing the compressor at start"): when a job starts, its
// workers time dense all-reduces of two known sizes on their own link, and rank 0 picks, with the
// bandwidth model (report/bandwidth_model.h), the faster of
//   none                  the dense all-reduce, and
//   powersgd at --rank    the accuracy guard: --rank must be >= 4 (kMinAutoRank) with auto,
// predicting each one's reducer time per step without overlap: the dense candidate's collectives of
// the model's gradient bytes, against PowerSGD's compression compute (timed on this machine, on random
// gradients of the model's shapes, in-process) plus its collectives. Rank 0 broadcasts its measurement,
// so every rank decides the same. A measurement that is absurd (a time that is not positive and
// finite, a bandwidth outside [1 kbit/s, 10 Tbit/s]) falls back to powersgd with a warning: on a link
// lowrank cannot measure, compression is the choice that is never far from best where bandwidth is scarce.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/comm/communicator.h"
#include "lowrank/report/bandwidth_model.h"
#include "lowrank/train/train_options.h"

namespace lowrank {
namespace launch {

/// The smallest rank `--compressor auto` compresses with.
constexpr int64_t kMinAutoRank = 4;
/// The two all-reduce sizes of the link probe, bytes.
constexpr int64_t kProbeLargeBytes = 1 << 20, kProbeSmallBytes = 1 << 12;
/// Timed rounds of the probe (after one warm-up round); each round all-reduces both sizes once.
constexpr int kProbeRounds = 5;

/// Seconds per all-reduce of the probe's two sizes (the fastest of kProbeRounds), as rank 0 measured them.
struct LinkTiming {
  double large_s = 0, small_s = 0;
};

/// A link inferred from a timing: the ring all-reduce's 2(W−1)/W·8n/B + 2(W−1)·L solved for B and L
/// from the two sizes. `problem` is non-empty when the timing is absurd (then B and L are unset).
struct MeasuredLink {
  report::Link link;
  std::string problem;
};
MeasuredLink link_from_timing(const LinkTiming& t, int world_size);

struct CompressorChoice {
  std::string compressor;     ///< "none" or "powersgd"
  MeasuredLink measured;
  double dense_ms = 0;        ///< predicted reducer ms per step of none
  double compressed_ms = 0;   ///< of powersgd (compression compute included)
  std::string reason;         ///< one line for the start of the run
};

/// The decision from a measured link and the two candidates' profiles (pure; the same on every rank).
CompressorChoice choose_compressor(const MeasuredLink& measured, const report::StepProfile& dense,
                                   const report::StepProfile& compressed, int64_t rank);

/// Collective: times the probe (a warm-up round, then kProbeRounds rounds that all-reduce each size
/// once, the sizes alternating) and broadcasts rank 0's fastest time of each size.
LinkTiming time_link(comm::Communicator& comm);

/// Collective: `options` with compressor "auto" replaced by the choice (printed by rank 0 on `log`).
train::TrainOptions resolve_auto_compressor(comm::Communicator& comm, const train::TrainOptions& options,
                                           std::ostream* log);

}  // namespace launch
}  // namespace lowrank
