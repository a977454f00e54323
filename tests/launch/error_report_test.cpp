// A worker's error report (launch/error_report.h): what the launcher reads back is what the
// worker wrote.
#include "lowrank/launch/error_report.h"

#include <gtest/gtest.h>

#include <string>

namespace lowrank {
namespace {

TEST(ErrorReport, TheMessageAndItsTimestampComeBack) {
  const std::string message = "rank 1: shard rank1.pt is damaged\n  second line";
  const auto r = launch::parse_error_report(launch::format_error_report(message, 123456789));
  EXPECT_EQ(r.error, message);
  EXPECT_EQ(r.error_ns, 123456789);
}

TEST(ErrorReport, TextWithoutTheHeaderIsTheMessageAsItIs) {
  const auto plain = launch::parse_error_report("boom: bad shard\n \n");
  EXPECT_EQ(plain.error, "boom: bad shard");
  EXPECT_EQ(plain.error_ns, -1);
  const auto empty = launch::parse_error_report("");
  EXPECT_EQ(empty.error, "");
  EXPECT_EQ(empty.error_ns, -1);
  const auto header_only = launch::parse_error_report("lowrank-error v1\n42");
  EXPECT_EQ(header_only.error, "");
  EXPECT_EQ(header_only.error_ns, 42);
}

TEST(ErrorReport, TimestampsComeFromTheMonotonicClock) {
  const int64_t a = launch::monotonic_ns();
  const int64_t b = launch::monotonic_ns();
  EXPECT_GT(a, 0);
  EXPECT_LE(a, b);
}

}  // namespace
}  // namespace lowrank
