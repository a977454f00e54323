#include "lowrank/data/idx_reader.h"

#include <gtest/gtest.h>

#include "support/train_test_support.h"

namespace lowrank {
namespace {

using testing::error_of;

using testing::idx_bytes;
using testing::TempDir;

std::vector<uint8_t> iota(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 % 256);
  return v;
}

// The message of the c10::Error `fn` throws ("" when it throws none).
TEST(IdxReader, ReadsGzipAndPlainFilesExactly) {
  TempDir dir("idx");
  const std::vector<int64_t> dims = {3, 2, 5};
  const auto data = iota(30);
  testing::write_gz(dir / "a.gz", idx_bytes(dims, data));
  testing::write_bytes(dir / "a", idx_bytes(dims, data));
  for (const auto& path : {dir / "a.gz", dir / "a"}) {
    const data::IdxArray a = data::read_idx(path);
    EXPECT_EQ(a.dims, dims) << path;
    ASSERT_EQ(a.data.sizes(), at::IntArrayRef(dims)) << path;
    ASSERT_EQ(a.data.scalar_type(), at::kByte);
    for (int64_t i = 0; i < 30; ++i) EXPECT_EQ(a.data.view(-1)[i].item<int64_t>(), data[i]) << path << " element " << i;
  }
}

TEST(IdxReader, MissingFileNamesThePath) {
  TempDir dir("idx");
  const std::string msg = error_of([&] { data::read_idx(dir / "nope.gz"); });
  EXPECT_NE(msg.find(dir / "nope.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("No such file"), std::string::npos) << msg;
}

TEST(IdxReader, RejectsBadMagic) {
  TempDir dir("idx");
  auto bytes = idx_bytes({2, 2}, iota(4));
  bytes[0] = 0x1f;  // not the two leading zero bytes
  testing::write_gz(dir / "m.gz", bytes);
  const std::string msg = error_of([&] { data::read_idx(dir / "m.gz"); });
  EXPECT_NE(msg.find("bad magic"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir / "m.gz"), std::string::npos) << msg;
}

TEST(IdxReader, RejectsUnsupportedElementType) {
  TempDir dir("idx");
  auto bytes = idx_bytes({4}, iota(4));
  bytes[2] = 0x0D;  // float
  testing::write_gz(dir / "t.gz", bytes);
  const std::string msg = error_of([&] { data::read_idx(dir / "t.gz"); });
  EXPECT_NE(msg.find("element type 0xd"), std::string::npos) << msg;
  EXPECT_NE(msg.find("only unsigned byte"), std::string::npos) << msg;
}

TEST(IdxReader, RejectsTruncatedData) {
  TempDir dir("idx");
  testing::write_gz(dir / "s.gz", idx_bytes({3, 4}, iota(10)));  // header promises 12
  const std::string msg = error_of([&] { data::read_idx(dir / "s.gz"); });
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  EXPECT_NE(msg.find("promises 12 data bytes, found 10"), std::string::npos) << msg;
}

TEST(IdxReader, RejectsTruncatedHeader) {
  TempDir dir("idx");
  auto bytes = idx_bytes({3, 4}, {});
  bytes.resize(6);  // two dimensions need 8 bytes of sizes
  testing::write_gz(dir / "h.gz", bytes);
  const std::string msg = error_of([&] { data::read_idx(dir / "h.gz"); });
  EXPECT_NE(msg.find("truncated header"), std::string::npos) << msg;
}

TEST(IdxReader, RejectsTrailingData) {
  TempDir dir("idx");
  testing::write_gz(dir / "x.gz", idx_bytes({2, 2}, iota(7)));  // header promises 4
  const std::string msg = error_of([&] { data::read_idx(dir / "x.gz"); });
  EXPECT_NE(msg.find("trailing data"), std::string::npos) << msg;
}

TEST(IdxReader, RejectsZeroSizedDimension) {
  TempDir dir("idx");
  testing::write_gz(dir / "z.gz", idx_bytes({0, 2}, {}));
  const std::string msg = error_of([&] { data::read_idx(dir / "z.gz"); });
  EXPECT_NE(msg.find("dimension 0 has size 0"), std::string::npos) << msg;
}

TEST(IdxReader, RejectsACutGzipStream) {
  TempDir dir("idx");
  testing::write_gz(dir / "full.gz", idx_bytes({64, 64}, iota(64 * 64)));
  std::string gz = testing::read_text(dir / "full.gz");
  ASSERT_GT(gz.size(), 40u);
  testing::write_bytes(dir / "cut.gz", std::vector<uint8_t>(gz.begin(), gz.begin() + gz.size() / 2));
  const std::string msg = error_of([&] { data::read_idx(dir / "cut.gz"); });
  EXPECT_NE(msg.find(dir / "cut.gz"), std::string::npos) << msg;
  EXPECT_TRUE(msg.find("corrupt gzip") != std::string::npos || msg.find("truncated") != std::string::npos) << msg;
}

}  // namespace
}  // namespace lowrank
