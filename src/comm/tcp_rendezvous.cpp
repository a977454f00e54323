// The TCP rendezvous behind make_tcp_communicator (see tcp_rendezvous.h): rank 0 hosts a
// c10d::TCPStore, the other ranks connect to it, and the ranks verify that they form one group.
#include "tcp_rendezvous.h"

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace lowrank {
namespace comm {
namespace detail {

std::string message_of(const std::exception& e) {
  if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) return ce->what_without_backtrace();
  return e.what();
}

namespace {

// ---- Rendezvous ----------------------------------------------------------------------------------
//
// Rank 0 hosts a c10d::TCPStore at MASTER_ADDR:MASTER_PORT and the other ranks connect to it.
// Before the gloo group is built, the ranks make sure through the store that they form one group,
// so that a mistake in the launch fails at once, naming itself, instead of inside gloo:
//   1. every rank resolves MASTER_ADDR first: an unknown name fails in milliseconds with the
//      resolver's reason (the store would retry it until the timeout and then blame the port);
//   2. a joining rank first probes the address (probe()): a service that speaks first is not a
//      store, and the store's client must never meet one;
//   3. rank 0 publishes kHostKey = "lowrank rendezvous world_size=W"; a joining rank reads it, so
//      it knows it reached a lowrank rank 0, and with which world size;
//   4. a joining rank claims its rank (add(kClaimPrefix + r, 1) returns 1 to the first process
//      with RANK=r, 2 to a second one) and appends its Arrival record to a log (the slot index
//      comes from add(kArrivalsKey, 1));
//   5. rank 0 reads the log as it grows and, once ranks 1..W-1 arrived with its world size, posts
//      kVerdictKey = "ok". A duplicate RANK, another world size or rank 0's timeout post the
//      reason instead, and every waiting rank fails with it at once. A joining rank that sees the
//      problem itself (its RANK taken, another world size) fails at once after appending its
//      record, so that rank 0, and through it every other rank, learns of it too. A rank that
//      reads a refusal acknowledges it (kVerdictReadKey): rank 0's store lives only as long as
//      rank 0, which therefore waits a little for the others (post_refusal) before it fails.
constexpr const char* kHostKey = "lowrank/rendezvous/host";
constexpr const char* kHostValue = "lowrank rendezvous world_size=";
constexpr const char* kClaimPrefix = "lowrank/rendezvous/claim/";
constexpr const char* kArrivalsKey = "lowrank/rendezvous/arrivals";
constexpr const char* kArrivalPrefix = "lowrank/rendezvous/arrival/";
constexpr const char* kVerdictKey = "lowrank/rendezvous/verdict";
constexpr const char* kVerdictOk = "ok";
constexpr const char* kVerdictReadKey = "lowrank/rendezvous/verdict_read";
// Rank 0 publishes kHostKey microseconds after its store listens: a service that does not within
// this long (capped by the timeout) is not a lowrank rank 0.
constexpr std::chrono::milliseconds kHostWait{10000};
// The same, when rank 0 that cannot host the store asks whether another rank 0 holds the port.
constexpr std::chrono::milliseconds kOtherHostWait{3000};
// A TCPStore server never sends before it is asked; a service that does within this long after
// accepting a connection is something else (an SSH banner comes at once).
constexpr std::chrono::milliseconds kGreetingWindow{250};
constexpr int kProbeConnectMs = 1000;
// How long rank 0 keeps its store up at most after refusing a group, for the other ranks (which
// may still be starting) to read why.
constexpr std::chrono::milliseconds kLinger{5000};
// ... and how long no new rank arrived before it stops waiting for more.
constexpr std::chrono::milliseconds kQuiet{2000};
constexpr size_t kGreetingChars = 60;

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }
std::string string_of(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

std::string seconds_of(std::chrono::milliseconds t) {
  std::ostringstream s;
  s << std::chrono::duration<double>(t).count();
  return s.str();
}

// The first line of `bytes` as printable text, for a message.
std::string printable(const char* bytes, size_t n) {
  std::string s;
  for (size_t i = 0; i < n && bytes[i] != '\r' && bytes[i] != '\n'; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    s += c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '?';
  }
  if (s.size() > kGreetingChars) s = s.substr(0, kGreetingChars) + "...";
  if (s.empty()) s = "<" + std::to_string(n) + " bytes, not text>";
  return s;
}

struct Rendezvous {
  int rank;
  int world_size;
  std::string addr;
  int port;
  std::chrono::milliseconds timeout;

  std::string where() const { return addr + ":" + std::to_string(port); }
  [[noreturn]] void fail(const std::string& reason) const {
    TORCH_CHECK(false, "rank ", rank, ": rendezvous at ", where(), " failed: ", reason);
  }
};

using AddressList = std::unique_ptr<addrinfo, void (*)(addrinfo*)>;

// MASTER_ADDR:MASTER_PORT's addresses, or a failure naming the name and the resolver's reason.
AddressList resolve(const Rendezvous& rv) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* list = nullptr;
  const int rc = ::getaddrinfo(rv.addr.c_str(), std::to_string(rv.port).c_str(), &hints, &list);
  const int err = errno;
  if (rc != 0)
    rv.fail("MASTER_ADDR '" + rv.addr + "' does not resolve to an address: " +
            (rc == EAI_SYSTEM ? std::string(std::strerror(err)) : std::string(::gai_strerror(rc))) +
            " (hint: set MASTER_ADDR to the name or IP address of rank 0's machine, as every rank's machine can "
            "resolve it)");
  return AddressList(list, ::freeaddrinfo);
}

struct Probe {
  bool listening = false;  // something accepted the connection
  std::string greeting;    // what it sent unasked (printable()); empty when it stayed silent
};

// Connects once to the first of `addresses` that accepts and listens for kGreetingWindow. A
// TCPStore server never speaks first, so a greeting (an SSH banner) tells that the port belongs
// to another service. This must be known before a TCPStore client connects there: the client's
// background thread would read the greeting as a message length and abort the whole process
// (std::bad_alloc). The probe serves only this diagnosis; all rendezvous traffic goes through c10d.
Probe probe(const addrinfo* addresses) {
  struct Fd {
    int fd;
    ~Fd() {
      if (fd >= 0) ::close(fd);
    }
  };
  Probe out;
  for (const addrinfo* a = addresses; a; a = a->ai_next) {
    const Fd s{::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol)};
    if (s.fd < 0) continue;
    if (::connect(s.fd, a->ai_addr, a->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) continue;
      pollfd p{s.fd, POLLOUT, 0};
      int err = 0;
      socklen_t len = sizeof(err);
      if (::poll(&p, 1, kProbeConnectMs) != 1 || ::getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
          err != 0)
        continue;
    }
    out.listening = true;
    pollfd p{s.fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(kGreetingWindow.count())) == 1) {
      char buf[256];
      const ssize_t n = ::recv(s.fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n > 0) out.greeting = printable(buf, static_cast<size_t>(n));
    }
    return out;
  }
  return out;
}

// Until a joining rank's store client has heard lowrank's rank 0, a service that speaks late
// (after probe() stopped listening) still reaches the client's background thread, which reads the
// words as a length, dies of std::bad_alloc and ends the process through std::terminate, beyond
// any catch. For that window this names the likely cause on stderr before the abort.
class TerminateHint {
 public:
  explicit TerminateHint(std::string line) : line_(std::move(line)) {
    std::lock_guard<std::mutex> lock(mutex());
    if (hints().empty()) previous() = std::set_terminate(&on_terminate);
    hints().push_back(this);
  }
  ~TerminateHint() {
    std::lock_guard<std::mutex> lock(mutex());
    hints().erase(std::find(hints().begin(), hints().end(), this));
    if (hints().empty()) std::set_terminate(previous());
  }
  TerminateHint(const TerminateHint&) = delete;
  TerminateHint& operator=(const TerminateHint&) = delete;

 private:
  [[noreturn]] static void on_terminate() {
    std::string what = "an unknown exception";
    if (const auto e = std::current_exception()) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        what = x.what();
      } catch (...) {
      }
    }
    std::terminate_handler next = nullptr;
    {
      std::unique_lock<std::mutex> lock(mutex(), std::try_to_lock);
      if (lock.owns_lock()) {
        for (const TerminateHint* h : hints()) std::fprintf(stderr, "%s (%s)\n", h->line_.c_str(), what.c_str());
        next = previous();
      }
    }
    if (next) next();
    std::abort();
  }
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static std::vector<const TerminateHint*>& hints() {
    static std::vector<const TerminateHint*> h;
    return h;
  }
  static std::terminate_handler& previous() {
    static std::terminate_handler p = nullptr;
    return p;
  }
  std::string line_;
};

std::string late_speaker_hint(const Rendezvous& rv) {
  return "rank " + std::to_string(rv.rank) + ": rendezvous at " + rv.where() + " failed: " + rv.where() +
         " is not a lowrank rendezvous: the c10d store's client could not read what the service there sent, and "
         "its thread died of it";
}

// One process's arrival, as a joining rank records it in the log rank 0 reads.
struct Arrival {
  int rank = -1;
  int world_size = 0;
  int64_t claims = 0;  // processes that claimed this rank so far, this one included

  std::string to_string() const {
    return "rank=" + std::to_string(rank) + " world_size=" + std::to_string(world_size) +
           " claims=" + std::to_string(claims);
  }
  static std::optional<Arrival> parse(const std::string& s) {
    Arrival a;
    long long claims = 0;
    if (std::sscanf(s.c_str(), "rank=%d world_size=%d claims=%lld", &a.rank, &a.world_size, &claims) != 3)
      return std::nullopt;
    a.claims = claims;
    return a;
  }
};

std::string world_size_reason(int rank, int world_size, int rank0_world_size) {
  return "ranks disagree on WORLD_SIZE: rank 0 has " + std::to_string(rank0_world_size) + ", rank " +
         std::to_string(rank) + " has " + std::to_string(world_size) +
         " (hint: start every rank with the same WORLD_SIZE)";
}

std::string duplicate_reason(int rank, int world_size) {
  return "rank " + std::to_string(rank) + " joined twice: two processes were started with RANK=" +
         std::to_string(rank) + " (hint: give each of the " + std::to_string(world_size) +
         " processes its own RANK in [0, " + std::to_string(world_size) + "))";
}

// Claims this process's rank and appends its arrival to the log; returns the record.
Arrival announce(c10d::Store& store, int rank, int world_size) {
  Arrival a;
  a.rank = rank;
  a.world_size = world_size;
  a.claims = store.add(kClaimPrefix + std::to_string(rank), 1);
  const int64_t slot = store.add(kArrivalsKey, 1) - 1;
  store.set(kArrivalPrefix + std::to_string(slot), bytes_of(a.to_string()));
  return a;
}

// Rank 0's world size from kHostKey, or a failure saying that the service is not a lowrank rank 0.
int read_host(c10d::Store& store, const Rendezvous& rv, std::chrono::milliseconds wait) {
  std::string value;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    store.wait({kHostKey}, wait);
    value = string_of(store.get(kHostKey));
  } catch (const std::exception& e) {
    // A garbled answer can make the client allocate a "length" of petabytes (std::bad_alloc).
    if (std::chrono::steady_clock::now() - t0 < wait * 9 / 10)
      rv.fail(rv.where() + " is not a lowrank rendezvous: it does not answer as a c10d store does (" +
              message_of(e) + ")");
    rv.fail(rv.where() + " did not answer as a lowrank rank 0 within " + seconds_of(wait) + " s (" + message_of(e) +
            "): it is not a lowrank rendezvous (another program's port?), or rank 0 stopped");
  }
  int world_size = 0;
  char rest = 0;
  const std::string format = std::string(kHostValue) + "%d%c";
  if (std::sscanf(value.c_str(), format.c_str(), &world_size, &rest) != 1 || world_size < 1)
    rv.fail(rv.where() + " is not a lowrank rendezvous: it answered '" + printable(value.data(), value.size()) + "'");
  return world_size;
}

// A joining rank that reached rank 0 (read_host): claims its rank, announces itself and waits for
// rank 0's verdict.
void join_rendezvous(c10d::Store& store, const Rendezvous& rv, int rank0_world_size) {
  Arrival me;
  try {
    me = announce(store, rv.rank, rv.world_size);
  } catch (const std::exception& e) {
    rv.fail("announcing itself to rank 0 failed: " + message_of(e));
  }
  if (rank0_world_size != rv.world_size) rv.fail(world_size_reason(rv.rank, rv.world_size, rank0_world_size));
  if (me.claims > 1) rv.fail(duplicate_reason(rv.rank, rv.world_size));
  std::string verdict;
  const auto t0 = std::chrono::steady_clock::now();
  // Rank 0 posts its verdict at the latest when its own timeout ends, which started about when this
  // rank's did: waiting a little longer (a quarter of the timeout, within [1 s, 15 s]) lets a busy
  // machine's rank 0 say why ("rank 2 of 3 never came") instead of this rank guessing.
  const auto wait = rv.timeout + std::min(std::chrono::milliseconds(15000),
                                          std::max(std::chrono::milliseconds(1000), rv.timeout / 4));
  try {
    store.wait({kVerdictKey}, wait);
    verdict = string_of(store.get(kVerdictKey));
  } catch (const std::exception& e) {
    if (std::chrono::steady_clock::now() - t0 >= wait)
      rv.fail("rank 0 did not confirm the group within " + seconds_of(wait) + " s (" + message_of(e) +
              "): it has probably stopped");
    rv.fail("waiting for rank 0 to confirm the group failed (" + message_of(e) + "): rank 0 has probably died");
  }
  if (verdict == kVerdictOk) return;
  try {
    store.add(kVerdictReadKey, 1);  // rank 0 may go now
  } catch (const std::exception&) {
    // rank 0 is gone already
  }
  rv.fail(verdict);
}

// Rank 0's reading of the arrival log.
struct ArrivalLog {
  int64_t next = 0;     // the next slot to read
  int64_t records = 0;  // records read
  int64_t readers = 0;  // of them, processes that wait for the verdict (the others failed by themselves)
  int max_world_size = 0;  // the largest world size seen, rank 0's included

  // The records appended since the last call.
  std::vector<Arrival> read(c10d::Store& store, int world_size) {
    std::vector<Arrival> out;
    const int64_t slots = store.add(kArrivalsKey, 0);
    // A slot is counted before its record is written: read up to the first one not yet written.
    for (; next < slots && store.check({kArrivalPrefix + std::to_string(next)}); ++next)
      if (auto a = Arrival::parse(string_of(store.get(kArrivalPrefix + std::to_string(next))))) out.push_back(*a);
    max_world_size = std::max(max_world_size, world_size);
    for (const Arrival& a : out) {
      readers += a.world_size == world_size && a.rank > 0 && a.claims == 1;
      max_world_size = std::max(max_world_size, a.world_size);
    }
    records += static_cast<int64_t>(out.size());
    return out;
  }
};

// Rank 0 posts a refusal. Its store dies with it, so it stays, for at most kLinger, until every
// process waiting for the verdict acknowledged it (kVerdictReadKey) and, with
// `until_all_arrived`, until the others arrived (as many as the largest world size seen says, or
// none for kQuiet): started with the same mistake, they may still be on their way.
void post_refusal(c10d::Store& store, const Rendezvous& rv, const std::string& reason, ArrivalLog& log,
                  bool until_all_arrived) {
  try {
    store.set(kVerdictKey, bytes_of(reason));
    const auto start = std::chrono::steady_clock::now();
    auto last_arrival = start;
    for (;;) {
      const auto now = std::chrono::steady_clock::now();
      if (!log.read(store, rv.world_size).empty()) last_arrival = now;
      const bool arrived =
          !until_all_arrived || log.records >= log.max_world_size - 1 || now - last_arrival >= kQuiet;
      if ((arrived && store.add(kVerdictReadKey, 0) >= log.readers) || now - start >= std::min(rv.timeout, kLinger))
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  } catch (const std::exception&) {
    // rank 0's own store fails only in a broken process; rank 0's own error says enough
  }
}

// Rank 0: publishes kHostKey, then reads arrivals until ranks 1..W-1 came, a problem shows, or
// the timeout passes; posts the verdict either way.
void host_rendezvous(c10d::Store& store, const Rendezvous& rv, const std::function<void(const std::string&)>& say) {
  std::vector<int64_t> arrived(rv.world_size, 0);  // processes that arrived as each rank
  ArrivalLog log;
  auto refuse = [&](const std::string& reason) {
    post_refusal(store, rv, reason, log, /*until_all_arrived=*/true);
    rv.fail(reason);
  };
  try {
    store.set(kHostKey, bytes_of(kHostValue + std::to_string(rv.world_size)));
    arrived[0] = store.add(kClaimPrefix + std::string("0"), 1);
  } catch (const std::exception& e) {
    rv.fail("publishing the rendezvous failed: " + message_of(e));
  }
  const auto t0 = std::chrono::steady_clock::now();
  bool announced = false;
  for (;;) {
    std::vector<Arrival> news;
    try {
      news = log.read(store, rv.world_size);
    } catch (const std::exception& e) {
      rv.fail("reading the ranks' arrivals failed: " + message_of(e));
    }
    for (const Arrival& a : news) {
      if (a.world_size != rv.world_size) refuse(world_size_reason(a.rank, a.world_size, rv.world_size));
      if (a.rank < 0 || a.rank >= rv.world_size) continue;  // not written by lowrank
      if (a.claims > 1 || ++arrived[a.rank] > 1) refuse(duplicate_reason(a.rank, rv.world_size));
    }
    std::vector<int> missing;
    for (int r = 1; r < rv.world_size; ++r)
      if (arrived[r] == 0) missing.push_back(r);
    if (missing.empty()) break;
    const auto waited = std::chrono::steady_clock::now() - t0;
    std::ostringstream list;
    for (size_t i = 0; i < missing.size(); ++i) list << (i ? ", " : "") << missing[i];
    if (!announced && waited >= std::chrono::seconds(1)) {
      if (say)
        say("rank 0: waiting for " + std::to_string(missing.size()) + " more rank" + (missing.size() > 1 ? "s" : "") +
            " (" + list.str() + ") at " + rv.where() + " (timeout " + seconds_of(rv.timeout) + " s)");
      announced = true;
    }
    if (waited >= rv.timeout) {
      const std::string came = std::string("rank") + (missing.size() > 1 ? "s " : " ") + list.str() + " of " +
                               std::to_string(rv.world_size) +
                               " never came (hint: start them with the same MASTER_ADDR/MASTER_PORT and WORLD_SIZE, "
                               "or raise --timeout)";
      post_refusal(store, rv, "rank 0 gave up after " + seconds_of(rv.timeout) + " s: " + came, log,
                   /*until_all_arrived=*/false);
      TORCH_CHECK(false, "rank 0: rendezvous at ", rv.where(), " timed out after ", seconds_of(rv.timeout), " s: ",
                  came);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  try {
    store.set(kVerdictKey, bytes_of(kVerdictOk));
  } catch (const std::exception& e) {
    rv.fail("confirming the group failed: " + message_of(e));
  }
}

// Rank 0 could not host the store: says what holds the port, when it can tell. Another lowrank
// rank 0 there learns of this one (a duplicate RANK=0), so that its group fails too.
[[noreturn]] void fail_to_host(const Rendezvous& rv, const addrinfo* addresses, const std::string& error) {
  const Probe p = probe(addresses);
  if (!p.greeting.empty())
    rv.fail("port " + std::to_string(rv.port) + " is taken by another service, which spoke first ('" + p.greeting +
            "') (hint: choose another MASTER_PORT)");
  if (p.listening) {
    std::optional<int> other_world_size;
    try {
      c10d::TCPStoreOptions so;
      so.port = static_cast<std::uint16_t>(rv.port);
      so.isServer = false;
      so.waitWorkers = false;
      so.timeout = std::min(rv.timeout, kOtherHostWait);
      const TerminateHint hint(late_speaker_hint(rv));
      c10d::TCPStore store(rv.addr, so);
      other_world_size = read_host(store, rv, so.timeout);
      announce(store, 0, rv.world_size);
    } catch (const std::exception&) {
      // not a lowrank rendezvous (or gone): the port is merely in use
    }
    if (other_world_size)
      rv.fail("another rank 0 (world size " + std::to_string(*other_world_size) +
              ") already hosts a lowrank rendezvous on port " + std::to_string(rv.port) +
              ": two processes were started with RANK=0, or another job uses this port (hint: give each process its "
              "own RANK, and each job its own MASTER_PORT)");
  }
  rv.fail(error + " (hint: is the port already in use?)");
}

}  // namespace

c10::intrusive_ptr<c10d::Store> rendezvous_store(int rank, int world_size, const std::string& master_addr,
                                                 int master_port, const CommOptions& options) {
  const Rendezvous rv{rank, world_size, master_addr, master_port, options.timeout};
  const AddressList addresses = resolve(rv);
  if (rank != 0) {
    if (options.on_wait)
      options.on_wait("rank " + std::to_string(rank) + ": connecting to rank 0 at " + rv.where() + " (timeout " +
                      seconds_of(options.timeout) + " s)");
    const Probe p = probe(addresses.get());
    if (!p.greeting.empty())
      rv.fail(rv.where() + " is not a lowrank rendezvous: the service there spoke first ('" + p.greeting +
              "'), which a lowrank rank 0 never does (hint: set MASTER_PORT to the port rank 0 hosts the rendezvous "
              "on)");
  }
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(master_port);
  so.isServer = rank == 0;
  so.numWorkers = c10::nullopt;
  so.waitWorkers = false;
  so.timeout = options.timeout;
  std::optional<TerminateHint> hint;  // outlives the store when an error unwinds them
  if (rank != 0) hint.emplace(late_speaker_hint(rv));
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(master_addr, so);
  } catch (const std::exception& e) {
    if (rank == 0) fail_to_host(rv, addresses.get(), message_of(e));
    rv.fail(message_of(e) +
            " (hint: rank 0 never answered: is it started, with this MASTER_ADDR/MASTER_PORT, and reachable from "
            "here?)");
  }
  if (rank == 0) {
    host_rendezvous(*store, rv, options.on_wait);
  } else {
    const int rank0_world_size = read_host(*store, rv, std::min(rv.timeout, kHostWait));
    hint.reset();  // lowrank's rank 0 answered: its store never sends unasked
    join_rendezvous(*store, rv, rank0_world_size);
  }
  return store;
}

}  // namespace detail
}  // namespace comm
}  // namespace lowrank
