#include "lowrank/comm/agreement.h"

#include <c10/util/Exception.h>

#include <cstring>
#include <exception>
#include <sstream>
#include <vector>

#include "lowrank/util/hash.h"

namespace lowrank {
namespace {

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream is(s);
  for (std::string line; std::getline(is, line);) out.push_back(line);
  return out;
}

}  // namespace

void check_agreement(comm::Communicator& comm, const std::string& fingerprint, const std::string& what) {
  if (comm.size() == 1) return;
  at::Tensor mine = at::empty({2}, at::kLong);
  mine[0] = static_cast<int64_t>(fnv1a(fingerprint));
  mine[1] = static_cast<int64_t>(fingerprint.size());
  auto all = comm.all_gather(mine);
  bool same = true;
  int64_t max_len = 0;
  for (const auto& a : all) {
    same = same && at::equal(a, all[0]);
    max_len = std::max(max_len, a[1].item<int64_t>());
  }
  if (same) return;

  at::Tensor text = at::zeros({max_len}, at::kByte);
  std::memcpy(text.data_ptr(), fingerprint.data(), fingerprint.size());
  auto texts = comm.all_gather(text);
  const auto own = lines_of(fingerprint);
  std::ostringstream msg;
  msg << "rank " << comm.rank() << ": ranks disagree on " << what << ".";
  for (size_t r = 0; r < texts.size(); ++r) {
    if (static_cast<int>(r) == comm.rank()) continue;
    const std::string other(reinterpret_cast<const char*>(texts[r].data_ptr()),
                            static_cast<size_t>(all[r][1].item<int64_t>()));
    const auto theirs = lines_of(other);
    for (size_t i = 0; i < std::max(own.size(), theirs.size()); ++i) {
      const std::string a = i < own.size() ? own[i] : "<nothing>";
      const std::string b = i < theirs.size() ? theirs[i] : "<nothing>";
      if (a != b) msg << "\n  this rank (" << comm.rank() << "): " << a << "\n  rank " << r << ":        " << b;
    }
  }
  TORCH_CHECK(false, msg.str());
}

void run_together(comm::Communicator& comm, const std::string& what, const std::function<void()>& fn) {
  std::exception_ptr error;
  try {
    fn();
  } catch (...) {
    error = std::current_exception();
  }
  if (comm.size() > 1) {
    const auto all = comm.all_gather_flags(error ? 1 : 0);
    if (!error) {
      std::ostringstream failed;
      int n = 0;
      for (size_t r = 0; r < all.size(); ++r)
        if (all[r] != 0) failed << (n++ ? ", " : "") << r;
      TORCH_CHECK(n == 0, "rank ", comm.rank(), ": rank", (n > 1 ? "s " : " "), failed.str(), " failed while ", what,
                  " (see ", (n > 1 ? "their" : "its"), " error); every rank stopped");
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace lowrank
