// make_tcp_communicator's rendezvous under launch mistakes: each must fail at once (not after the
// timeout), on every rank it concerns, with a message naming the mistake. Ranks are threads of
// this process, each rendezvousing through its own TCPStore client on a free loopback port.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "lowrank/comm/communicator.h"
#include "lowrank/launch/launcher.h"

namespace lowrank {
namespace {

// "At once": a mistake found in the store is known within milliseconds, but rank 0 may wait up to
// 2 s for more ranks to tell them why, and joining ranks retry their first connection after 1 s;
// this allows for a loaded machine running the suite in parallel, far below the timeouts set.
constexpr double kAtOnceSeconds = 8.0;
// The timeout of a rendezvous whose mistake must be caught long before it.
constexpr std::chrono::milliseconds kLongTimeout{60000};

struct Outcome {
  bool ok = false;
  std::string error;  // the c10::Error's message; other exceptions are marked as such
  double seconds = 0;
};

Outcome attempt(int rank, int world_size, const std::string& addr, int port, std::chrono::milliseconds timeout) {
  Outcome o;
  comm::CommOptions options;
  options.timeout = timeout;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    auto c = comm::make_tcp_communicator(rank, world_size, addr, port, options);
    at::Tensor t = at::ones({2});
    c->all_reduce_(t);
    o.ok = at::equal(t, at::full({2}, double(world_size)));
    if (!o.ok) o.error = "wrong all-reduce result";
  } catch (const c10::Error& e) {
    o.error = e.msg();
  } catch (const std::exception& e) {
    o.error = std::string("not a c10::Error: ") + e.what();
  }
  o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return o;
}

struct Launch {
  int rank;
  int world_size;
};

// Starts every launch on its own thread at once; returns their outcomes in order.
std::vector<Outcome> attempt_all(const std::vector<Launch>& launches, int port,
                                 std::chrono::milliseconds timeout = kLongTimeout) {
  std::vector<Outcome> out(launches.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < launches.size(); ++i)
    threads.emplace_back(
        [&, i] { out[i] = attempt(launches[i].rank, launches[i].world_size, "127.0.0.1", port, timeout); });
  for (auto& t : threads) t.join();
  return out;
}

void expect_fails_at_once(const Outcome& o, const std::vector<std::string>& needles, const std::string& who) {
  EXPECT_FALSE(o.ok) << who;
  for (const auto& n : needles) EXPECT_NE(o.error.find(n), std::string::npos) << who << ": '" << n << "' in\n" << o.error;
  EXPECT_EQ(o.error.find("not a c10::Error"), std::string::npos) << who << ": " << o.error;
  EXPECT_LT(o.seconds, kAtOnceSeconds) << who << ": " << o.error;
}

// A TCP service on a free port of every interface, standing for one that is not a rendezvous:
// with a greeting it speaks first on every connection and then stays silent (as SSH does);
// without, it answers the first bytes it receives with `answer` and hangs up (as HTTP does).
class FakeService {
 public:
  FakeService(std::string greeting, std::string answer) : greeting_(std::move(greeting)), answer_(std::move(answer)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    socklen_t len = sizeof(sa);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeService() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  int port() const { return port_; }
  int connections() const { return connections_; }

 private:
  void serve() {
    std::vector<int> open;
    while (!stop_) {
      std::vector<pollfd> fds{{fd_, POLLIN, 0}};
      for (int c : open) fds.push_back({c, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
      for (size_t i = 1; i < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        char buf[512];
        const ssize_t n = ::recv(fds[i].fd, buf, sizeof(buf), 0);
        if (n > 0 && !answer_.empty()) (void)!::send(fds[i].fd, answer_.data(), answer_.size(), MSG_NOSIGNAL);
        if (n <= 0 || !answer_.empty()) {
          ::close(fds[i].fd);
          open.erase(std::find(open.begin(), open.end(), fds[i].fd));
        }
      }
      if (fds[0].revents) {
        const int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) continue;
        ++connections_;
        if (!greeting_.empty()) (void)!::send(c, greeting_.data(), greeting_.size(), MSG_NOSIGNAL);
        open.push_back(c);
      }
    }
    for (int c : open) ::close(c);
  }

  std::string greeting_, answer_;
  int fd_ = -1, port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::thread thread_;
};

TEST(Rendezvous, ALegitimateGroupFormsQuickly) {
  const int port = launch::find_free_port();
  const auto outcomes = attempt_all({{2, 3}, {0, 3}, {1, 3}}, port);
  for (size_t i = 0; i < outcomes.size(); ++i) {
    EXPECT_TRUE(outcomes[i].ok) << "launch " << i << ": " << outcomes[i].error;
    EXPECT_LT(outcomes[i].seconds, kAtOnceSeconds) << "launch " << i;
  }
}

struct MismatchCase {
  std::vector<Launch> launches;
  std::string named;  // what every launch's error must say
};

class MismatchedWorldSizes : public ::testing::TestWithParam<MismatchCase> {};

TEST_P(MismatchedWorldSizes, FailOnEveryRankNamingBoth) {
  const auto& c = GetParam();
  const auto o = attempt_all(c.launches, launch::find_free_port());
  for (size_t i = 0; i < o.size(); ++i)
    expect_fails_at_once(o[i], {c.named, "(hint: start every rank with the same WORLD_SIZE)"},
                         "rank " + std::to_string(c.launches[i].rank) + " of " +
                             std::to_string(c.launches[i].world_size));
}

INSTANTIATE_TEST_SUITE_P(
    Rendezvous, MismatchedWorldSizes,
    ::testing::Values(
        MismatchCase{{{0, 2}, {1, 3}}, "ranks disagree on WORLD_SIZE: rank 0 has 2, rank 1 has 3"},
        // Rank 2 is no rank at all for rank 0 (world size 2); rank 0 still learns of it.
        MismatchCase{{{0, 2}, {2, 3}}, "ranks disagree on WORLD_SIZE: rank 0 has 2, rank 2 has 3"},
        // Rank 1 agrees with rank 0; it learns of rank 2's mistake through rank 0.
        MismatchCase{{{0, 4}, {1, 4}, {2, 3}}, "ranks disagree on WORLD_SIZE: rank 0 has 4, rank 2 has 3"}));

TEST(Rendezvous, ADuplicateRankIsNamedByEveryRank) {
  const auto o = attempt_all({{0, 3}, {1, 3}, {1, 3}}, launch::find_free_port());
  for (size_t i = 0; i < o.size(); ++i)
    expect_fails_at_once(o[i], {"rank 1 joined twice: two processes were started with RANK=1"},
                         "launch " + std::to_string(i));
}

TEST(Rendezvous, ADuplicateRankZeroIsNamedByBoth) {
  const int port = launch::find_free_port();
  Outcome first;
  std::thread t([&] { first = attempt(0, 2, "127.0.0.1", port, kLongTimeout); });
  // The second rank 0 must find the port taken: wait until the first one listens.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(port));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0;
    ::close(fd);
    if (up || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const Outcome second = attempt(0, 2, "127.0.0.1", port, kLongTimeout);
  t.join();
  expect_fails_at_once(second, {"another rank 0 (world size 2) already hosts a lowrank rendezvous on port " +
                                    std::to_string(port),
                                "two processes were started with RANK=0"},
                       "the second rank 0");
  expect_fails_at_once(first, {"rank 0 joined twice: two processes were started with RANK=0"}, "the first rank 0");
}

TEST(Rendezvous, AnUnresolvableMasterAddrFailsAtOnceNamingIt) {
  for (int rank : {0, 1}) {
    const Outcome o = attempt(rank, 2, "no-such-host.invalid", launch::find_free_port(), kLongTimeout);
    expect_fails_at_once(o, {"rank " + std::to_string(rank) + ": rendezvous at no-such-host.invalid:",
                             "MASTER_ADDR 'no-such-host.invalid' does not resolve to an address: "},
                         "rank " + std::to_string(rank));
  }
}

TEST(Rendezvous, AServiceThatSpeaksFirstIsNotARendezvous) {
  FakeService ssh("SSH-2.0-OpenSSH_9.2\r\n", "");
  const std::string at = "127.0.0.1:" + std::to_string(ssh.port());
  const Outcome joining = attempt(1, 2, "127.0.0.1", ssh.port(), kLongTimeout);
  expect_fails_at_once(joining,
                       {"rank 1: rendezvous at " + at + " failed: " + at +
                        " is not a lowrank rendezvous: the service there spoke first ('SSH-2.0-OpenSSH_9.2')"},
                       "a joining rank");
  const Outcome hosting = attempt(0, 2, "127.0.0.1", ssh.port(), kLongTimeout);
  expect_fails_at_once(hosting,
                       {"rank 0: rendezvous at " + at + " failed: ",
                        "port " + std::to_string(ssh.port()) + " is taken by another service, which spoke first ('SSH-2.0-OpenSSH_9.2')"},
                       "rank 0");
}

TEST(Rendezvous, AServiceThatAnswersNonsenseIsNotARendezvous) {
  FakeService http("", "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
  const Outcome o = attempt(1, 2, "127.0.0.1", http.port(), kLongTimeout);
  expect_fails_at_once(o, {"127.0.0.1:" + std::to_string(http.port()) + " is not a lowrank rendezvous"},
                       "a joining rank");
  EXPECT_GE(http.connections(), 1);
}

TEST(Rendezvous, RankZerosTimeoutReachesTheWaitingRanks) {
  const std::chrono::milliseconds timeout{2000};
  const auto o = attempt_all({{0, 3}, {1, 3}}, launch::find_free_port(), timeout);
  EXPECT_NE(o[0].error.find("timed out after 2 s: rank 2 of 3 never came"), std::string::npos) << o[0].error;
  EXPECT_NE(o[1].error.find("rank 1: rendezvous at 127.0.0.1:"), std::string::npos) << o[1].error;
  EXPECT_NE(o[1].error.find("rank 0 gave up after 2 s: rank 2 of 3 never came"), std::string::npos) << o[1].error;
  for (const auto& x : o) EXPECT_LT(x.seconds, 2.0 + kAtOnceSeconds) << x.error;
}

}  // namespace
}  // namespace lowrank
