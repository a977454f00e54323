#include "lowrank/reducer/bucket_plan.h"

#include <algorithm>
#include <map>

namespace lowrank {

std::vector<std::vector<size_t>> plan_buckets(const std::vector<BucketPlanEntry>& params, int64_t cap_bytes) {
  std::vector<std::vector<size_t>> closed;
  std::map<at::ScalarType, std::pair<std::vector<size_t>, int64_t>> open;  // dtype -> (members, bytes)
  for (size_t k = params.size(); k-- > 0;) {
    auto& b = open[params[k].dtype];
    b.first.push_back(k);
    b.second += params[k].bytes;
    if (cap_bytes > 0 && b.second >= cap_bytes) {
      closed.push_back(std::move(b.first));
      b = {};
    }
  }
  // Open buckets close at the end, in the order their first member was added (reverse order).
  std::vector<std::vector<size_t>> rest;
  for (auto& kv : open)
    if (!kv.second.first.empty()) rest.push_back(std::move(kv.second.first));
  std::sort(rest.begin(), rest.end(), [](const auto& a, const auto& b) { return a.front() > b.front(); });
  for (auto& r : rest) closed.push_back(std::move(r));
  // Launch order: by each bucket's first-produced (highest-index) member.
  std::stable_sort(closed.begin(), closed.end(), [](const auto& a, const auto& b) { return a.front() > b.front(); });
  for (auto& b : closed) std::sort(b.begin(), b.end());
  return closed;
}

std::vector<std::vector<size_t>> plan_buckets(const std::vector<ParamState>& params, double cap_mb) {
  std::vector<BucketPlanEntry> entries;
  entries.reserve(params.size());
  for (const auto& p : params)
    entries.push_back({p.param.numel() * static_cast<int64_t>(c10::elementSize(p.work_dtype)), p.work_dtype});
  return plan_buckets(entries, static_cast<int64_t>(cap_mb * 1024 * 1024));
}

}  // namespace lowrank
