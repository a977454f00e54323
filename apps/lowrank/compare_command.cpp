// `lowrank compare`: runs several configurations of one task and seed, one after another, each as
// a full `lowrank train` child process of this same binary (/proc/self/exe) writing into
// OUT/<label>/, then writes OUT/compare.md, OUT/compare.csv and the comparison PNGs (report/plot.h).
#include <c10/util/Exception.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"
#include "number_flags.h"
#include "lowrank/util/files.h"
#include "lowrank/report/bandwidth_model.h"
#include "lowrank/report/metrics_writer.h"  // floats_text
#include "lowrank/report/plot.h"

extern char** environ;

namespace lowrank {
namespace cli {
namespace {

namespace fs = std::filesystem;

struct CompareFlags {
  std::string out;
  std::string configs;
  std::vector<std::string> shared;
  bool keep_going = false;
  bool overwrite = false;
  double latency_ms = 0.1;  ///< link latency per message hop for the predicted step times
  bool shared_link = false;  ///< the predicted link is one medium shared by all workers
  std::string links = "10mbit 100mbit 1gbit 10gbit";  ///< bandwidths of the prediction table
};

struct RunConfig {
  std::string text;                 ///< as written in --configs
  std::string label;
  std::vector<std::string> flags;  ///< train flags of this config
};

std::string trim(const std::string& s) {
  const auto a = s.find_first_not_of(" \t\n");
  if (a == std::string::npos) return "";
  const auto b = s.find_last_not_of(" \t\n");
  return s.substr(a, b - a + 1);
}

// Splits on whitespace; '...' and "..." quote (no escapes).
std::vector<std::string> split_words(const std::string& s, const std::string& where) {
  std::vector<std::string> out;
  std::string cur;
  bool in_word = false;
  char quote = 0;
  for (char c : s) {
    if (quote) {
      if (c == quote) quote = 0;
      else cur += c;
    } else if (c == '\'' || c == '"') {
      quote = c;
      in_word = true;
    } else if (c == ' ' || c == '\t' || c == '\n') {
      if (in_word) out.push_back(cur);
      cur.clear();
      in_word = false;
    } else {
      cur += c;
      in_word = true;
    }
  }
  TORCH_CHECK(!quote, "unbalanced quote in ", where);
  if (in_word) out.push_back(cur);
  return out;
}

// A label usable as a directory name: letters, digits and . _ + = - kept, anything else '_'.
std::string sanitize(const std::string& s) {
  std::string out;
  for (char c : s) out += (std::isalnum(static_cast<unsigned char>(c)) || std::strchr("._+=-", c)) ? c : '_';
  return out;
}

// "powersgd --rank 4 --opt tau=100" -> "powersgd-r4-tau100"; "none" -> "none".
std::string derive_label(const std::vector<std::string>& flags) {
  std::string compressor, rest;
  for (size_t i = 0; i < flags.size(); ++i) {
    const std::string& a = flags[i];
    const bool has_value = i + 1 < flags.size() && flags[i + 1].rfind("--", 0) != 0;
    const std::string value = has_value ? flags[i + 1] : "";
    if (a == "--compressor" && has_value) {
      compressor = value;
    } else if (a == "--rank" && has_value) {
      rest += "-r" + value;
    } else if (a == "--opt" && has_value) {
      std::string kv = value;
      const auto eq = kv.find('=');
      if (eq != std::string::npos) kv.erase(eq, 1);
      rest += "-" + kv;
    } else if (a.rfind("--", 0) == 0) {
      rest += "-" + a.substr(2) + value;
    } else {
      continue;  // a value, taken with its flag
    }
    if (has_value) ++i;
  }
  return sanitize((compressor.empty() ? std::string("default") : compressor) + rest);
}

std::vector<RunConfig> parse_configs(const std::string& text) {
  std::vector<RunConfig> out;
  std::set<std::string> labels;
  std::istringstream in(text);
  for (std::string part; std::getline(in, part, ';');) {
    part = trim(part);
    if (part.empty()) continue;
    RunConfig c;
    c.text = part;
    std::string body = part;
    if (body.rfind("label=", 0) == 0) {
      const auto colon = body.find(':');
      TORCH_CHECK(colon != std::string::npos, "--configs: '", part, "' starts with label= but has no ':' after the label "
                  "(write label=NAME: FLAGS...)");
      c.label = trim(body.substr(6, colon - 6));
      TORCH_CHECK(!c.label.empty() && sanitize(c.label) == c.label && c.label != "." && c.label != "..",
                  "--configs: label '", c.label, "' must be non-empty and use only letters, digits and . _ + = -");
      body = body.substr(colon + 1);
    }
    auto words = split_words(body, "--configs '" + part + "'");
    // A first word that is not a flag is the compressor: "powersgd --rank 4".
    if (!words.empty() && words.front().rfind("-", 0) != 0) words.insert(words.begin(), "--compressor");
    for (const auto& w : words)
      TORCH_CHECK(w != "--out" && w.rfind("--out=", 0) != 0, "--configs: '", part,
                  "' sets --out; compare writes each config into OUT/<label>/");
    c.flags = words;
    if (c.label.empty()) c.label = derive_label(words);
    TORCH_CHECK(labels.insert(c.label).second, "--configs: two configs get the label '", c.label,
                "'; name them apart with label=NAME: (e.g. \"label=", c.label, "-b: ", body, "\")");
    out.push_back(std::move(c));
  }
  TORCH_CHECK(!out.empty(), "--configs lists no configuration (e.g. --configs \"none; powersgd --rank 4\")");
  return out;
}

// Flags of `lowrank train` that may be given more than once.
bool repeatable(const std::string& flag) { return flag == "--opt" || flag == "--uncompressed-names"; }

std::string flag_name(const std::string& w) { return w.substr(0, w.find('=')); }

void check_no_clash(const std::vector<std::string>& shared, const RunConfig& c) {
  std::set<std::string> shared_flags;
  for (const auto& w : shared) {
    TORCH_CHECK(flag_name(w) != "--out", "the shared train flags set --out; compare writes each config into OUT/<label>/ "
                "(give --out before --)");
    if (w.rfind("--", 0) == 0) shared_flags.insert(flag_name(w));
  }
  for (const auto& w : c.flags)
    if (w.rfind("--", 0) == 0 && !repeatable(flag_name(w)) && shared_flags.count(flag_name(w)))
      TORCH_CHECK(false, "config '", c.label, "' sets ", flag_name(w), ", which the shared train flags after -- set too");
}

std::string quote_arg(const std::string& a) {
  if (!a.empty() && a.find_first_of(" \t'\"\\$;&|<>()*?") == std::string::npos) return a;
  std::string out = "'";
  for (char c : a) out += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string tail_lines(const std::string& path, size_t n) {
  std::ifstream f(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(f, l);) lines.push_back(l);
  std::ostringstream os;
  for (size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size(); ++i) os << "    " << lines[i] << "\n";
  return os.str();
}

// Runs `argv` with stdout and stderr into `log` (and `env_extra`, "NAME=value", added to the
// environment); returns the wait status text ("" when it exited 0).
std::string run_child(const std::vector<std::string>& args, const std::string& log,
                      const std::vector<std::string>& env_extra = {}) {
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TORCH_CHECK(fd >= 0, "cannot write ", log, ": ", std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fd, 1);
  posix_spawn_file_actions_adddup2(&actions, fd, 2);
  std::vector<std::string> a = args;
  std::vector<char*> argv;
  for (auto& s : a) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings = env_extra;
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  for (char** e = environ; *e; ++e) envp.push_back(*e);
  envp.push_back(nullptr);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(fd);
  TORCH_CHECK(rc == 0, "could not start /proc/self/exe train: ", std::strerror(rc));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status) == 0 ? "" : "exit status " + std::to_string(WEXITSTATUS(status));
  return "killed by signal " + std::to_string(WTERMSIG(status));
}

std::string fixed(double x, int decimals) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(decimals) << x;
  return os.str();
}

std::string csv_cell(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += (c == '"') ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

// The files compare itself writes into OUT (besides <label>.log and the runs' <label>/).
const std::vector<std::string>& report_files() {
  static const std::vector<std::string> files = {
      "compare.md",         "compare.csv",        "loss_vs_step.png",    "loss_vs_step.gp",   "loss_vs_step.dat",
      "loss_vs_bytes.png",  "loss_vs_bytes.gp",   "loss_vs_bytes.dat",   "metric_vs_ratio.png", "metric_vs_ratio.gp",
      "metric_vs_ratio.dat", "predicted.csv", "step_time_vs_bandwidth.png", "step_time_vs_bandwidth.gp", "step_time_vs_bandwidth.dat"};
  return files;
}

// The same rule as `train --out`: a non-empty OUT needs --overwrite, which removes compare's own
// files (the reports, the plots, <label>.log of these configs; each <label>/ is left to its run's
// own --overwrite) and refuses when OUT holds anything else. Nothing is touched on a refusal.
void prepare_compare_out(const std::string& out, const std::vector<RunConfig>& configs, bool overwrite) {
  std::set<std::string> own(report_files().begin(), report_files().end());
  std::set<std::string> run_dirs;
  own.insert(kLockFileName);
  for (const auto& c : configs) {
    own.insert(c.label + ".log");
    run_dirs.insert(c.label);
  }
  std::vector<std::string> entries, foreign;
  for (const auto& e : fs::directory_iterator(out)) {
    const std::string name = e.path().filename().string();
    if (name == kLockFileName) continue;
    entries.push_back(name);
    if (!own.count(name) && !(run_dirs.count(name) && e.is_directory())) foreign.push_back(name);
  }
  std::sort(entries.begin(), entries.end());
  std::sort(foreign.begin(), foreign.end());
  auto listing = [](const std::vector<std::string>& names) {
    std::string s;
    for (size_t i = 0; i < names.size() && i < 6; ++i) s += (i ? ", " : "") + names[i];
    if (names.size() > 6) s += ", ... (" + std::to_string(names.size()) + " entries)";
    return s;
  };
  if (entries.empty()) return;
  TORCH_CHECK(overwrite, "compare: output directory ", out, " is not empty (", listing(entries),
              "): pass --overwrite to replace an earlier comparison of these configs, or choose another --out");
  TORCH_CHECK(foreign.empty(), "compare: output directory ", out, " holds files compare did not write for these configs (",
              listing(foreign), "); --overwrite only replaces compare.md, compare.csv, the plots, <label>.log and "
              "<label>/ of the configs given: choose another --out");
  for (const auto& name : entries)
    if (own.count(name)) {
      std::error_code ec;
      fs::remove(fs::path(out) / name, ec);
      TORCH_CHECK(!ec, "compare --overwrite: cannot remove ", (fs::path(out) / name).string(), ": ", ec.message());
    }
}

// Every config's flags are checked by `lowrank train` itself (LOWRANK_CHECK_ONLY=1: it parses and
// validates, and writes nothing) before the first config runs, so a typo in the last one does not
// cost the time of the others.
void check_configs(const std::vector<RunConfig>& configs, const std::vector<std::string>& shared) {
  const char* tmpdir = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") + "/lowrank-compare-check-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  const int fd = ::mkstemp(buf.data());
  TORCH_CHECK(fd >= 0, "compare: cannot create a temporary file in ", tmpl, ": ", std::strerror(errno));
  ::close(fd);
  const std::string log = buf.data();
  for (const auto& c : configs) {
    std::vector<std::string> args{"lowrank", "train"};
    args.insert(args.end(), shared.begin(), shared.end());
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    const std::string status = run_child(args, log, {"LOWRANK_CHECK_ONLY=1"});
    if (!status.empty()) {
      const std::string tail = tail_lines(log, 6);
      ::unlink(log.c_str());
      TORCH_CHECK(false, "compare: config '", c.label, "' (", c.text, ") is refused by lowrank train (", status,
                  "); nothing was run:\n", tail);
    }
  }
  ::unlink(log.c_str());
}

struct Outcome {
  RunConfig config;
  std::string error;  ///< "" when the run finished
  double run_seconds = 0;
  bool have_summary = false;
  report::RunSummary summary;
};

const char* kCsvHeader =
    "label,status,compressor,rank,options,metric,metric_value,final_train_loss,bytes_sent_per_worker,"
    "floats_sent_per_worker,compression_ratio,wall_seconds,run_seconds,step_ms_median,forward_backward_ms,"
    "communicate_ms,compress_ms,collective_ms,optimizer_ms,flags";

// --links: bandwidths separated by spaces, each as tc writes it.
std::vector<double> link_bandwidths(const std::string& text) {
  std::istringstream words(text);
  std::vector<double> out;
  for (std::string w; words >> w;) out.push_back(report::parse_bandwidth(w));
  TORCH_CHECK(!out.empty(), "compare: --links needs at least one bandwidth, e.g. \"100mbit 1gbit\", got '", text, "'");
  return out;
}

// OUT/predicted.csv: one row per finished run and bandwidth of --links, with the predicted step and
// communication times (for scripts/validate_bandwidth_model.py and anyone who wants the numbers).
std::string predictions_csv(const std::vector<Outcome>& outcomes, const std::vector<double>& links, double latency_ms,
                            bool shared) {
  std::ostringstream csv;
  csv << "label,compressor,bits_per_second,latency_ms,shared_link,predicted_step_ms,predicted_step_ms_overlap,"
         "predicted_communication_ms,measured_step_ms\n";
  for (const auto& o : outcomes) {
    if (!o.have_summary || !o.summary.has_per_step()) continue;
    const report::StepProfile p = report::step_profile_of(o.summary);
    for (double b : links) {
      const report::Link link{b, latency_ms / 1e3, shared};
      csv << csv_cell(o.config.label) << "," << csv_cell(o.summary.compressor) << "," << b << "," << latency_ms << ","
          << (shared ? "true" : "false") << "," << report::predicted_step_ms(p, link, false) << ","
          << report::predicted_step_ms(p, link, true) << "," << report::communication_ms(p, link) << ","
          << o.summary.step_ms_median << "\n";
    }
  }
  return csv.str();
}

// compare.md's "Predicted step time by link" section (report/bandwidth_model.h): every finished run at
// the bandwidths of --links, and where dense becomes faster. The dense reference is each run's own
// dense profile (its compute and optimizer, its dense bytes in its buckets): the compute of two runs
// differs only by measurement noise, which must not decide the break-even point.
std::string prediction_section(const std::vector<Outcome>& outcomes, const std::vector<double>& links,
                               double latency_ms, bool shared) {
  using report::bandwidth_text;
  const double latency_s = latency_ms / 1e3;
  std::ostringstream md;
  md << "\n## Predicted step time by link\n\nFrom each run's own per-step measurements (compute, compression, "
        "optimizer, and the bytes and collectives of summary.json's per_step) on a ring of the run's world size, "
        "latency " << fixed(latency_ms, 3) << " ms per hop"
     << (shared ? ", one link shared by all workers (--shared-link)" : ", a link per worker")
     << " (docs/reports.md, \"Predicted step time by link\"). "
     << "Step ms without overlap at each bandwidth; break-even: the bandwidth above which "
     << "the run's own dense all-reduce (same compute) is faster (—: never slower; ∞: always).\n\n"
     << "| label | measured step ms |";
  for (double b : links) md << " " << bandwidth_text(b) << " |";
  md << " break-even, no overlap | break-even, overlap |\n|---|---:|";
  for (size_t i = 0; i < links.size(); ++i) md << "---:|";
  md << "---:|---:|\n";
  int rows = 0;
  for (const auto& o : outcomes) {
    if (!o.have_summary || !o.summary.has_per_step()) continue;
    const auto& s = o.summary;
    const report::StepProfile p = report::step_profile_of(s);
    md << "| " << o.config.label << " | " << fixed(s.step_ms_median, 1) << " |";
    for (double b : links)
      md << " " << fixed(report::predicted_step_ms(p, report::Link{b, latency_s, shared}, false), 1) << " |";
    if (s.compressor == "none" || s.compressor == "noop") {
      md << " | |\n";
    } else {
      const report::StepProfile dense = report::dense_profile_of(p, s.dense_bytes_per_step, s.buckets_per_step);
      for (bool overlap : {false, true})
        md << " " << bandwidth_text(report::break_even_bits_per_second(p, dense, latency_s, overlap, shared)) << " |";
      md << "\n";
    }
    ++rows;
  }
  if (rows == 0) return "";
  return md.str() + "\nPlot: step_time_vs_bandwidth.png (no overlap); every number in predicted.csv.\n";
}

void write_reports(const CompareFlags& f, const std::vector<Outcome>& outcomes) {
  const std::string& out = f.out;
  const std::vector<std::string>& shared = f.shared;
  const std::vector<double> links = link_bandwidths(f.links);
  std::ostringstream csv, md;
  csv << kCsvHeader << "\n";
  std::string shared_text;
  for (const auto& w : shared) shared_text += (shared_text.empty() ? "" : " ") + quote_arg(w);
  md << "# lowrank compare\n\nShared train flags: `" << (shared_text.empty() ? "(none)" : shared_text) << "`\n\n"
     << "| label | compressor | rank | options | final metric | final train loss | MB sent / worker | bytes sent / "
        "worker | compression ratio | wall s | step ms | fwd+bwd ms | communicate ms | compress ms | collective ms | "
        "optimizer ms |\n"
     << "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& o : outcomes) {
    std::string flags;
    for (const auto& w : o.config.flags) flags += (flags.empty() ? "" : " ") + quote_arg(w);
    if (!o.have_summary) {
      csv << csv_cell(o.config.label) << ",failed" << std::string(18, ',') << csv_cell(flags) << "\n";
      md << "| " << o.config.label << " | failed: " << o.error << " |";
      for (int k = 0; k < 14; ++k) md << " |";
      md << "\n";
      continue;
    }
    const auto& s = o.summary;
    const std::string rank = s.rank_auto ? "auto" : s.rank >= 0 ? std::to_string(s.rank) : "";
    csv << csv_cell(o.config.label) << ",ok," << csv_cell(s.compressor) << "," << rank << "," << csv_cell(s.compressor_options)
        << "," << s.metric << "," << s.metric_value << "," << s.final_train_loss << "," << s.bytes_sent_per_worker << ","
        << report::floats_text(s.bytes_sent_per_worker) << "," << s.compression_ratio << "," << s.wall_seconds << "," << fixed(o.run_seconds, 3)
        << "," << s.step_ms_median << "," << s.forward_backward_ms << "," << s.communicate_ms << "," << s.compress_ms << ","
        << s.collective_ms << "," << s.optimizer_ms << "," << csv_cell(flags) << "\n";
    const std::string metric = s.metric + " " + fixed(s.metric_value, 4) + (s.lower_is_better ? " (lower is better)" : "");
    md << "| " << o.config.label << " | " << s.compressor << " | " << rank << " | " << s.compressor_options << " | "
       << metric << " | " << fixed(s.final_train_loss, 4) << " | " << fixed(double(s.bytes_sent_per_worker) / 1e6, 3)
       << " | " << s.bytes_sent_per_worker << " | " << fixed(s.compression_ratio, 2) << " | " << fixed(s.wall_seconds, 1)
       << " | " << fixed(s.step_ms_median, 2) << " | " << fixed(s.forward_backward_ms, 2) << " | "
       << fixed(s.communicate_ms, 2) << " | " << fixed(s.compress_ms, 2) << " | " << fixed(s.collective_ms, 2) << " | "
       << fixed(s.optimizer_ms, 2) << " |\n";
  }
  md << "\nTimes are medians per step (summary.json, docs/outputs.md#timing-fields); wall s is training time. "
     << "Plots: loss_vs_step.png, loss_vs_bytes.png, metric_vs_ratio.png; each run's files are in <label>/ and its "
        "output in <label>.log.\n";
  md << prediction_section(outcomes, links, f.latency_ms, f.shared_link);
  for (const auto& kv : {std::make_pair(std::string("compare.csv"), csv.str()), std::make_pair(std::string("compare.md"), md.str()),
                         std::make_pair(std::string("predicted.csv"),
                                        predictions_csv(outcomes, links, f.latency_ms, f.shared_link))}) {
    const std::string path = (fs::path(out) / kv.first).string();
    std::ofstream file(path, std::ios::trunc);
    file << kv.second;
    file.close();
    TORCH_CHECK(file.good(), "cannot write ", path);
  }
}

// Config i of n: one `lowrank train` into OUT/<label>/, its output in OUT/<label>.log, then its summary.
Outcome run_config(const CompareFlags& f, const RunConfig& c, size_t i, size_t n) {
  const std::string dir = (fs::path(f.out) / c.label).string();
  const std::string log = dir + ".log";
  std::vector<std::string> args{"lowrank", "train"};
  args.insert(args.end(), f.shared.begin(), f.shared.end());
  args.insert(args.end(), c.flags.begin(), c.flags.end());
  args.push_back("--out");
  args.push_back(dir);
  if (f.overwrite) args.push_back("--overwrite");
  std::string cmd;
  for (size_t k = 1; k < args.size(); ++k) cmd += (k > 1 ? " " : "") + quote_arg(args[k]);
  std::cout << "[" << i + 1 << "/" << n << "] " << c.label << ": lowrank " << cmd << "  (output: " << log << ")"
            << std::endl;
  const auto t0 = std::chrono::steady_clock::now();
  Outcome o;
  o.config = c;
  o.error = run_child(args, log);
  o.run_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (o.error.empty()) {
    try {
      o.summary = report::read_run_summary(dir);
      o.have_summary = true;
    } catch (const c10::Error& e) {
      o.error = e.what_without_backtrace();
    }
  }
  if (o.have_summary) {
    const auto& s = o.summary;
    std::cout << "[" << i + 1 << "/" << n << "] " << c.label << ": done in " << fixed(o.run_seconds, 1)
              << " s: " << s.metric << " " << fixed(s.metric_value, 4) << ", final train loss "
              << fixed(s.final_train_loss, 4) << ", compression ratio " << fixed(s.compression_ratio, 2) << std::endl;
  } else {
    std::cerr << "[" << i + 1 << "/" << n << "] config '" << c.label << "' failed (" << o.error << "); the end of "
              << log << ":\n"
              << tail_lines(log, 15) << std::flush;
  }
  return o;
}

// compare.md, compare.csv and the plots of the finished runs; then the verdict on the failed ones.
int finish_compare(const CompareFlags& f, const std::vector<Outcome>& outcomes, size_t n) {
  std::vector<std::string> finished, failed;
  for (const auto& o : outcomes) {
    if (o.have_summary) finished.push_back((fs::path(f.out) / o.config.label).string());
    else failed.push_back(o.config.label);
  }
  write_reports(f, outcomes);
  const std::string md = (fs::path(f.out) / "compare.md").string();
  std::cout << "wrote " << md << " and " << (fs::path(f.out) / "compare.csv").string() << "\n";
  if (!finished.empty()) {
    for (const auto& d : finished) report::plot_run_loss(d);
    const auto p = report::plot_comparison(finished, f.out);
    std::cout << "wrote " << p.loss_vs_step << ", " << p.loss_vs_bytes << ", " << p.metric_vs_ratio
              << " (and <label>/loss.png per run)\n";
    if (std::any_of(outcomes.begin(), outcomes.end(),
                    [](const Outcome& o) { return o.have_summary && o.summary.has_bandwidth_curve(); }))
      std::cout << "wrote "
                << report::plot_step_time_vs_bandwidth(finished, (fs::path(f.out) / "step_time_vs_bandwidth.png").string(),
                                                       f.latency_ms / 1e3, false, f.shared_link)
                << "\n";
  }
  if (!failed.empty()) {
    std::string names;
    for (const auto& l : failed) names += (names.empty() ? "" : ", ") + l;
    TORCH_CHECK(false, "compare: config '", failed.front(), "' failed",
                f.keep_going ? " (" + std::to_string(failed.size()) + " of " + std::to_string(n) + " failed: " + names +
                                   ")"
                             : " and stopped the comparison (--keep-going runs the rest)",
                "; see ", (fs::path(f.out) / (failed.front() + ".log")).string());
  }
  std::cout << "\n" << std::ifstream(md).rdbuf();
  return 0;
}

int run_compare(const CompareFlags& f) {
  TORCH_CHECK(std::isfinite(f.latency_ms) && f.latency_ms >= 0, "compare: --latency-ms must be a finite number >= 0, got ",
              f.latency_ms);
  link_bandwidths(f.links);  // a bad one fails before anything runs
  const auto configs = parse_configs(f.configs);
  for (const auto& c : configs) check_no_clash(f.shared, c);
  check_configs(configs, f.shared);
  make_directories(f.out);
  const DirectoryLock lock(f.out, "compare output directory (--out)");  // one comparison at a time
  prepare_compare_out(f.out, configs, f.overwrite);
  std::vector<Outcome> outcomes;
  for (size_t i = 0; i < configs.size(); ++i) {
    outcomes.push_back(run_config(f, configs[i], i, configs.size()));
    if (!outcomes.back().have_summary && !f.keep_going) break;
  }
  return finish_compare(f, outcomes, configs.size());
}

}  // namespace

Command add_compare_command(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "compare",
      "Run several configurations of one task and seed, one after another, each a full `lowrank train` into "
      "OUT/<label>/, then write OUT/compare.md, OUT/compare.csv and comparison plots. Example: lowrank compare --out "
      "runs/cmp --configs \"none; powersgd --rank 4\" -- --nproc 2 --steps 50");
  auto f = std::make_shared<CompareFlags>();
  sub->add_option("--out", f->out,
                  "Directory of the comparison: OUT/<label>/ per config (its metrics.csv, summary.json), "
                  "OUT/<label>.log (its output), OUT/compare.md, OUT/compare.csv, OUT/*.png")
      ->required()
      ->type_name("DIR");
  sub->add_option("--configs", f->configs,
                  "Configurations separated by ';', each a list of train flags, a first word without '-' being the "
                  "compressor, optionally prefixed by label=NAME: (default label: compressor, -r<rank>, then the "
                  "other flags, e.g. powersgd-r4). E.g. \"none; powersgd --rank 4; label=p8: powersgd+ --rank 8 --opt "
                  "restart_period=100\"")
      ->required()
      ->type_name("\"CFG; CFG; ...\"");
  add_real(sub, "--latency-ms", f->latency_ms,
           "Link latency per message hop (ms, >= 0) for compare.md's predicted step times by bandwidth and "
           "step_time_vs_bandwidth.png (docs/reports.md)",
           non_negative(1e6))
      ->capture_default_str();
  sub->add_option("--links", f->links,
                  "Bandwidths of compare.md's prediction table and predicted.csv, as tc writes them (e.g. 20mbit "
                  "100mbit 1gbit)")
      ->capture_default_str();
  sub->add_flag("--shared-link", f->shared_link,
                "Predict for one link shared by all workers (every worker's bytes cross it: workers behind one "
                "uplink, or scripts/with_slow_link.sh's shaped loopback) instead of a link per worker");
  sub->add_flag("--keep-going", f->keep_going,
                "Run the remaining configs after one fails (the report marks it failed; the exit status is still 1). "
                "Without it the first failure stops the comparison, names the config and exits 1");
  sub->add_flag("--overwrite", f->overwrite,
                "Replace an earlier comparison in a non-empty OUT: its compare.md, compare.csv, plots and <label>.log "
                "are removed and every run gets --overwrite; anything else in OUT is refused, never removed");
  sub->add_option("train_flags", f->shared,
                  "Train flags shared by every config, after -- (e.g. -- --nproc 2 --model mlp --steps 50 --seed 1)")
      ->type_name("-- TRAIN_FLAGS...");
  return {sub, [f] { return run_compare(*f); }};
}

}  // namespace cli
}  // namespace lowrank
