#include "lowrank/data/idx_reader.h"

#include <c10/util/Exception.h>
#include <sys/stat.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>

namespace lowrank {
namespace data {
namespace {

constexpr uint8_t kUnsignedByte = 0x08;
constexpr int kMaxDims = 8;
// Largest element count we accept (2^34 bytes = 16 GiB); a larger header is corruption.
constexpr int64_t kMaxElements = int64_t(1) << 34;
// gzread takes an unsigned length; read in chunks well below its limit.
constexpr int64_t kChunk = int64_t(1) << 28;

struct GzCloser {
  void operator()(gzFile_s* f) const {
    if (f) gzclose(f);
  }
};
using GzPtr = std::unique_ptr<gzFile_s, GzCloser>;

// Reads exactly `len` bytes unless the stream ends; returns the count read. Throws on gzip errors.
int64_t read_some(gzFile f, uint8_t* dst, int64_t len, const std::string& path) {
  int64_t done = 0;
  while (done < len) {
    const auto want = static_cast<unsigned>(std::min(kChunk, len - done));
    const int got = gzread(f, dst + done, want);
    if (got < 0) {
      int code = 0;
      const char* msg = gzerror(f, &code);
      TORCH_CHECK(false, "corrupt gzip stream in ", path, ": ", msg ? msg : "unknown zlib error");
    }
    if (got == 0) break;
    done += got;
  }
  // A gzip stream that stops mid-way reads as a short count plus an error state.
  int code = Z_OK;
  const char* msg = gzerror(f, &code);
  TORCH_CHECK(code == Z_OK || code == Z_STREAM_END, "corrupt gzip stream in ", path, ": ",
              msg ? msg : "unknown zlib error", " (zlib code ", code, ")");
  return done;
}

}  // namespace

std::vector<uint8_t> idx_header(const std::vector<int64_t>& dims) {
  TORCH_CHECK(!dims.empty() && dims.size() <= static_cast<size_t>(kMaxDims), "IDX header: 1 to ", kMaxDims,
              " dimensions, got ", dims.size());
  std::vector<uint8_t> h = {0, 0, kUnsignedByte, static_cast<uint8_t>(dims.size())};
  for (int64_t d : dims) {
    TORCH_CHECK(d >= 0 && d <= std::numeric_limits<uint32_t>::max(), "IDX header: size ", d, " does not fit uint32");
    for (int shift = 24; shift >= 0; shift -= 8) h.push_back(static_cast<uint8_t>((d >> shift) & 0xff));
  }
  return h;
}

IdxArray read_idx(const std::string& path) {
  struct stat st {};
  TORCH_CHECK(::stat(path.c_str(), &st) == 0, "cannot read ", path, ": ", std::strerror(errno));
  TORCH_CHECK(S_ISREG(st.st_mode), "cannot read ", path, ": not a regular file");
  errno = 0;
  GzPtr f(gzopen(path.c_str(), "rb"));
  TORCH_CHECK(f, "cannot open ", path, ": ", errno ? std::strerror(errno) : "zlib could not allocate a stream");
  gzbuffer(f.get(), 1 << 17);

  uint8_t magic[4] = {0, 0, 0, 0};
  const int64_t got_magic = read_some(f.get(), magic, 4, path);
  TORCH_CHECK(got_magic == 4, "corrupt IDX file ", path, ": ", got_magic, " bytes, too short for the 4-byte magic");
  TORCH_CHECK(magic[0] == 0 && magic[1] == 0 && magic[3] >= 1 && magic[3] <= kMaxDims, "corrupt IDX file ", path,
              ": bad magic number ", int(magic[0]), " ", int(magic[1]), " ", int(magic[2]), " ", int(magic[3]),
              " (expected 0 0 <type> <1..", kMaxDims, " dimensions>)");
  TORCH_CHECK(magic[2] == kUnsignedByte, "unsupported IDX file ", path, ": element type 0x", std::hex,
              int(magic[2]), std::dec, "; only unsigned byte (0x08) is supported");

  IdxArray out;
  const int ndim = magic[3];
  uint8_t sizes[4 * kMaxDims];
  const int64_t got_sizes = read_some(f.get(), sizes, 4 * ndim, path);
  TORCH_CHECK(got_sizes == 4 * ndim, "corrupt IDX file ", path, ": truncated header (", ndim, " dimensions need ",
              4 * ndim, " bytes of sizes, found ", got_sizes, ")");
  int64_t count = 1;
  for (int d = 0; d < ndim; ++d) {
    const uint8_t* b = sizes + 4 * d;
    const int64_t v = (int64_t(b[0]) << 24) | (int64_t(b[1]) << 16) | (int64_t(b[2]) << 8) | int64_t(b[3]);
    TORCH_CHECK(v > 0, "corrupt IDX file ", path, ": dimension ", d, " has size 0");
    TORCH_CHECK(count <= kMaxElements / v, "corrupt IDX file ", path, ": the sizes in the header multiply to more than ",
                kMaxElements, " elements");
    count *= v;
    out.dims.push_back(v);
  }

  out.data = at::empty(out.dims, at::kByte);
  const int64_t got = read_some(f.get(), out.data.data_ptr<uint8_t>(), count, path);
  TORCH_CHECK(got == count, "corrupt IDX file ", path, ": truncated, the header promises ", count,
              " data bytes, found ", got);
  uint8_t extra[256];
  const int64_t trailing = read_some(f.get(), extra, sizeof(extra), path);
  TORCH_CHECK(trailing == 0, "corrupt IDX file ", path, ": trailing data after the ", count,
              " bytes the header promises (at least ", trailing, " more bytes)");
  return out;
}

}  // namespace data
}  // namespace lowrank
