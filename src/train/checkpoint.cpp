#include "lowrank/train/checkpoint.h"

#include <c10/util/Exception.h>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "lowrank/comm/agreement.h"
#include "lowrank/util/files.h"
#include "lowrank/util/sha256.h"

namespace lowrank {
namespace train {
namespace {

using nlohmann::json;

constexpr const char* kManifest = "manifest.json";
constexpr const char* kStepPrefix = "step-";
constexpr const char* kAbandonedPrefix = "abandoned-";  // + a step directory's name

std::string shard_name(int rank) { return "rank" + std::to_string(rank) + ".pt"; }

// Writes `bytes` to `path` through a temporary file, fsync and rename. The temporary's name is the
// writer's own (<path>.tmp.<pid>), so two writers never share one; a failed write removes it.
void write_durably(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TORCH_CHECK(fd >= 0, "cannot write checkpoint file ", tmp, ": ", std::strerror(errno));
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      std::remove(tmp.c_str());
      TORCH_CHECK(false, "writing checkpoint file ", tmp, " failed: ", std::strerror(err));
    }
    off += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!synced) std::remove(tmp.c_str());
  TORCH_CHECK(synced, "fsync of checkpoint file ", tmp, " failed: ", std::strerror(err));
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int rename_err = errno;
    std::remove(tmp.c_str());
    TORCH_CHECK(false, "cannot rename ", tmp, " to ", path, ": ", std::strerror(rename_err));
  }
}

void sync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
}

bool read_file(const std::string& path, std::string* out) {
  std::optional<std::string> text = try_read_file(path);
  if (text) *out = *std::move(text);
  return text.has_value();
}

bool is_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// (step, name) of every "step-<digits>" entry of `root`.
std::vector<std::pair<int64_t, std::string>> step_dirs(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> out;
  for (const std::string& name : list_directory(root)) {
    if (name.rfind(kStepPrefix, 0) != 0) continue;
    const std::string digits = name.substr(std::strlen(kStepPrefix));
    if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) continue;
    out.emplace_back(std::stoll(digits), name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

bool is_checkpoint_entry(const std::string& name) {
  std::string rest = name;
  if (rest.rfind(kAbandonedPrefix, 0) == 0) rest = rest.substr(std::strlen(kAbandonedPrefix));
  if (rest.rfind(kStepPrefix, 0) != 0) return false;
  const std::string digits = rest.substr(std::strlen(kStepPrefix), rest.find('.') - std::strlen(kStepPrefix));
  return !digits.empty() && std::all_of(digits.begin(), digits.end(), ::isdigit);
}

bool is_checkpoint_file(const std::string& name) {
  std::string base = name;
  const auto tmp = base.find(".tmp");  // write_durably's temporaries: <file>.tmp.<pid> (older: <file>.tmp)
  if (tmp != std::string::npos) {
    const std::string rest = base.substr(tmp + 4);
    if (!rest.empty() && (rest[0] != '.' || rest.size() == 1 ||
                          !std::all_of(rest.begin() + 1, rest.end(), ::isdigit)))
      return false;
    base = base.substr(0, tmp);
  }
  if (base == kManifest) return true;
  if (base.size() <= 5 || base.rfind("rank", 0) != 0 || base.substr(base.size() - 3) != ".pt") return false;
  const std::string digits = base.substr(4, base.size() - 7);
  return !digits.empty() && std::all_of(digits.begin(), digits.end(), ::isdigit);
}

bool remove_checkpoint_dir(const std::string& dir) {
  if (::access(dir.c_str(), F_OK) != 0) return false;
  for (const auto& name : list_directory(dir))
    if (is_checkpoint_file(name)) std::remove((dir + "/" + name).c_str());
  return ::rmdir(dir.c_str()) == 0;  // fails (and keeps it) when anything else is inside
}

namespace {

// The manifest's checksum covers its canonical text without the checksum field.
std::string manifest_digest(json m) {
  m.erase("manifest_sha256");
  return sha256_hex(m.dump());
}

json settings_json(const SettingList& settings) {
  json out = json::object();
  for (const auto& kv : settings) out[kv.first] = kv.second;
  return out;
}

}  // namespace

std::string checkpoint_dir(const std::string& root, int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%s%08lld", kStepPrefix, static_cast<long long>(step));
  std::string base = root;
  while (base.size() > 1 && base.back() == '/') base.pop_back();  // "ck/" -> "ck/step-..." not "ck//step-..."
  return base + "/" + buf;
}

std::string save_checkpoint(comm::Communicator& comm, const std::string& root, int64_t step,
                            torch::serialize::OutputArchive& archive, const SettingList& settings, int keep,
                            const SettingList& environment) {
  TORCH_CHECK(keep >= 1, "keep (--keep-checkpoints) must be >= 1, got ", keep);
  const std::string dir = checkpoint_dir(root, step);
  // Rewriting a step that already has a complete checkpoint: its manifest goes first, so a crash
  // while the shards are replaced leaves it incomplete (skipped), never complete with bad checksums.
  run_together(comm, "replacing checkpoint " + dir, [&] {
    if (comm.rank() == 0 && is_file(dir + "/" + kManifest)) {
      TORCH_CHECK(std::remove((dir + "/" + kManifest).c_str()) == 0, "cannot remove the old manifest of ", dir, ": ",
                  std::strerror(errno));
      sync_directory(dir);
    }
  });
  std::string digest_hex;
  int64_t bytes = 0;
  // A failure on one rank (disk full) stops every rank here instead of leaving the others in the
  // next collective.
  run_together(comm, "writing checkpoint " + dir, [&] {
    make_directories(dir);
    std::ostringstream ss;
    archive.save_to(ss);
    const std::string data = ss.str();
    bytes = static_cast<int64_t>(data.size());
    digest_hex = sha256_hex(data);
    write_durably(dir + "/" + shard_name(comm.rank()), data);
  });
  // Gather every shard's (size, digest) to rank 0.
  at::Tensor mine = at::zeros({1 + 64}, at::kLong);
  mine[0] = bytes;
  for (size_t i = 0; i < 64; ++i) mine[1 + static_cast<int64_t>(i)] = static_cast<int64_t>(digest_hex[i]);
  auto all = comm.size() > 1 ? comm.all_gather(mine) : std::vector<at::Tensor>{mine};
  run_together(comm, "writing the manifest of " + dir, [&] {
    if (comm.rank() != 0) return;
    json shards = json::array();
    for (size_t r = 0; r < all.size(); ++r) {
      std::string hex(64, '0');
      for (size_t i = 0; i < 64; ++i) hex[i] = static_cast<char>(all[r][1 + static_cast<int64_t>(i)].item<int64_t>());
      shards.push_back({{"file", shard_name(static_cast<int>(r))},
                        {"rank", r},
                        {"bytes", all[r][0].item<int64_t>()},
                        {"sha256", hex}});
    }
    json m = {{"format", kCheckpointFormat}, {"version", kCheckpointVersion},   {"step", step},
              {"world_size", comm.size()},   {"settings", settings_json(settings)}, {"shards", shards},
              {"environment", settings_json(environment)}};
    m["manifest_sha256"] = manifest_digest(m);
    sync_directory(dir);
    write_durably(dir + "/" + kManifest, m.dump(2) + "\n");
    sync_directory(dir);
    // Prune: keep the newest `keep` complete checkpoints; drop incomplete ones older than this.
    const auto complete = list_checkpoints(root);
    for (size_t i = 0; i + static_cast<size_t>(keep) < complete.size(); ++i) (void)remove_checkpoint_dir(complete[i].dir);
    for (const auto& sd : step_dirs(root))
      if (sd.first < step && !is_file(root + "/" + sd.second + "/" + kManifest)) (void)remove_checkpoint_dir(root + "/" + sd.second);
  });
  return dir;
}

std::string checkpoint_root_of(const std::string& path) {
  if (!is_file(path + "/" + kManifest)) return path;
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const auto slash = p.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : p.substr(0, slash);
}

std::vector<std::string> abandon_newer_checkpoints(const std::string& root, int64_t step) {
  std::vector<std::string> moved;
  for (const auto& c : list_checkpoints(root)) {
    if (c.step <= step) continue;
    char buf[48];
    std::snprintf(buf, sizeof(buf), "%s%s%08lld", kAbandonedPrefix, kStepPrefix, static_cast<long long>(c.step));
    std::string to = root + "/" + buf;
    for (int k = 1; ::access(to.c_str(), F_OK) == 0; ++k) to = root + "/" + buf + "." + std::to_string(k);
    TORCH_CHECK(std::rename(c.dir.c_str(), to.c_str()) == 0, "cannot move the newer checkpoint ", c.dir, " aside to ",
                to, ": ", std::strerror(errno));
    moved.push_back(to);
  }
  return moved;
}

std::vector<CheckpointRef> list_checkpoints(const std::string& root) {
  std::vector<CheckpointRef> out;
  for (const auto& sd : step_dirs(root)) {
    const std::string dir = root + "/" + sd.second;
    if (is_file(dir + "/" + kManifest)) out.push_back({dir, sd.first});
  }
  return out;
}

CheckpointRef find_checkpoint(const std::string& path) {
  TORCH_CHECK(!path.empty(), "resume: the checkpoint path is empty");
  struct stat st {};
  TORCH_CHECK(::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode), "resume: ", path,
              " is not a directory (give the --checkpoint-dir of the run, or one of its step-* directories)");
  if (is_file(path + "/" + kManifest)) {
    std::string text;
    int64_t step = 0;
    try {
      read_file(path + "/" + kManifest, &text);
      step = json::parse(text).at("step").get<int64_t>();
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "checkpoint manifest ", path, "/", kManifest, " is damaged: ", e.what());
    }
    return {path, step};
  }
  const auto complete = list_checkpoints(path);
  if (!complete.empty()) return complete.back();
  std::ostringstream incomplete;
  for (const auto& sd : step_dirs(path)) incomplete << " " << sd.second;
  TORCH_CHECK(false, "resume: no complete checkpoint under ", path,
              incomplete.str().empty() ? std::string(" (no step-* directories)")
                                       : " (incomplete, without " + std::string(kManifest) + ":" + incomplete.str() + ")");
}

SettingList checkpoint_environment(const CheckpointRef& ref) {
  SettingList out;
  std::string text;
  if (!read_file(ref.dir + "/" + kManifest, &text)) return out;
  try {
    const json m = json::parse(text);
    if (m.is_object() && m.contains("environment") && m.at("environment").is_object())
      for (const auto& item : m.at("environment").items())
        if (item.value().is_string()) out.emplace_back(item.key(), item.value().get<std::string>());
  } catch (const std::exception&) {
    return {};  // load_checkpoint names a damaged manifest
  }
  return out;
}

namespace {

json read_manifest(const std::string& mpath) {
  std::string text;
  TORCH_CHECK(read_file(mpath, &text), "cannot read checkpoint manifest ", mpath, ": ", std::strerror(errno));
  try {
    return json::parse(text);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "checkpoint manifest ", mpath, " is damaged (not JSON: ", e.what(), ")");
  }
}

// Format, checksum, version and world size of a parsed manifest.
void check_manifest_header(const json& m, const std::string& mpath, const std::string& dir, int world_size) {
  TORCH_CHECK(m.is_object() && m.value("format", "") == kCheckpointFormat, "checkpoint manifest ", mpath,
              " is not a lowrank checkpoint manifest (format '", m.is_object() ? m.value("format", "?") : "?", "')");
  const std::string recorded = m.value("manifest_sha256", "");
  TORCH_CHECK(recorded == manifest_digest(m), "checkpoint manifest ", mpath,
              " is damaged: its checksum does not match its contents");
  const int version = m.at("version").get<int>();
  TORCH_CHECK(version == kCheckpointVersion, "checkpoint ", mpath, " has format version ", version,
              "; this lowrank reads version ", kCheckpointVersion);
  const int saved_world = m.at("world_size").get<int>();
  TORCH_CHECK(saved_world == world_size, "checkpoint ", dir, " was written by ", saved_world,
              " ranks; this run has ", world_size,
              ". Resuming on another world size is refused: each rank's error-feedback buffer holds the part of "
              "its own gradients not yet sent, and there is no exact way to redistribute them (docs/reliability.md)");
}

// Every setting that differs between the checkpoint and this run, one "\n  key: ..." line each.
std::string settings_diff(const json& saved, const SettingList& settings) {
  std::ostringstream diff;
  for (const auto& kv : settings) {
    const std::string was = saved.contains(kv.first) ? saved.at(kv.first).get<std::string>() : "<absent>";
    if (was != kv.second) {
      diff << "\n  " << kv.first << ": checkpoint " << was << ", this run " << kv.second;
      // Before issue 15 the data fingerprint hashed the labels and summed the pixels.
      if ((kv.first == "train_data" || kv.first == "test_data") && was.find(" pixel_sum ") != std::string::npos)
        diff << " (the checkpoint's fingerprint has the format of an older lowrank, which could not tell two "
                "swapped pixels apart: this lowrank cannot verify its data; finish that run with the lowrank that "
                "wrote it, or start afresh)";
    }
  }
  for (const auto& item : saved.items())
    if (std::none_of(settings.begin(), settings.end(), [&](const auto& kv) { return kv.first == item.key(); }))
      diff << "\n  " << item.key() << ": checkpoint " << item.value().get<std::string>() << ", this run <absent>";
  return diff.str();
}

struct ShardRef {
  std::string path, sha256;
  int64_t bytes = -1;
};

ShardRef shard_of(const json& m, const std::string& mpath, const std::string& dir, int rank, int world_size) {
  const json& shards = m.at("shards");
  TORCH_CHECK(shards.is_array() && static_cast<int>(shards.size()) == world_size, "checkpoint manifest ", mpath,
              " lists ", shards.size(), " shards for ", world_size, " ranks");
  const json& s = shards.at(static_cast<size_t>(rank));
  TORCH_CHECK(s.at("rank").get<int>() == rank, "checkpoint manifest ", mpath, " lists shard ", rank, " as rank ",
              s.at("rank").get<int>());
  return {dir + "/" + s.at("file").get<std::string>(), s.at("sha256").get<std::string>(), s.at("bytes").get<int64_t>()};
}

// The shard's bytes, checked against the manifest's size and SHA-256.
std::string read_shard(const ShardRef& shard) {
  std::string data;
  TORCH_CHECK(read_file(shard.path, &data), "checkpoint shard ", shard.path, " is missing (", std::strerror(errno),
              ")");
  TORCH_CHECK(static_cast<int64_t>(data.size()) == shard.bytes, "checkpoint shard ", shard.path, " has ", data.size(),
              " bytes; the manifest says ", shard.bytes, " (truncated or replaced)");
  TORCH_CHECK(sha256_hex(data) == shard.sha256, "checkpoint shard ", shard.path,
              " is damaged: its SHA-256 does not match the manifest's (bit flips, or another rank's shard)");
  return data;
}

}  // namespace

void load_checkpoint(const CheckpointRef& ref, int rank, int world_size, const SettingList& settings,
                     torch::serialize::InputArchive& archive) {
  const std::string mpath = ref.dir + "/" + kManifest;
  const json m = read_manifest(mpath);
  ShardRef shard;
  try {
    check_manifest_header(m, mpath, ref.dir, world_size);
    const std::string diff = settings_diff(m.at("settings"), settings);
    TORCH_CHECK(diff.empty(), "checkpoint ", ref.dir, " was written by a run with other settings; resuming "
                "needs the same ones:", diff);
    shard = shard_of(m, mpath, ref.dir, rank, world_size);
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, "checkpoint manifest ", mpath, " is damaged: ", e.what());
  }
  const std::string data = read_shard(shard);
  try {
    archive.load_from(data.data(), data.size());
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "checkpoint shard ", shard.path, " cannot be read: ", e.what());
  }
}

}  // namespace train
}  // namespace lowrank
