#include "lowrank/util/blas_info.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

namespace lowrank {
namespace {

// The BLAS torch's products run on is found in the process and named; scripts/setup.sh installs
// OpenBLAS, so the reference BLAS here means the set-up is broken (everything about 2x slower).
TEST(BlasInfo, NamesTheLoadedBlasAndItIsNotTheReferenceOne) {
  (void)at::mm(at::ones({8, 8}), at::ones({8, 8}));  // the BLAS is loaded by now
  const BlasInfo info = blas_info();
  EXPECT_FALSE(info.library.empty()) << info.describe();
  EXPECT_EQ(info.name.rfind("unknown", 0), std::string::npos) << info.describe();
  EXPECT_FALSE(info.reference) << "torch runs on the reference BLAS: " << info.describe();
  EXPECT_EQ(info.torch_threads, at::get_num_threads());
  EXPECT_NE(info.describe().find(info.name), std::string::npos);
}

// set_blas_threads reaches OpenBLAS's own pool (the pthread build ignores at::set_num_threads).
TEST(BlasInfo, SetBlasThreadsReachesOpenBlas) {
  const BlasInfo before = blas_info();
  if (before.name.rfind("OpenBLAS", 0) != 0) GTEST_SKIP() << "not OpenBLAS: " << before.describe();
  set_blas_threads(1);
  EXPECT_EQ(blas_info().blas_threads, 1);
  set_blas_threads(2);
  EXPECT_EQ(blas_info().blas_threads, 2);
  set_blas_threads(before.blas_threads);
}

}  // namespace
}  // namespace lowrank
