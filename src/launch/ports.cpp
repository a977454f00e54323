#include "lowrank/launch/ports.h"

#include <arpa/inet.h>
#include <c10/util/Exception.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace lowrank {
namespace launch {
namespace {

// Every address `addr` resolves to (a numeric IPv4 or IPv6 address, or a host name).
std::vector<sockaddr_storage> resolve_addresses(const std::string& addr, std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  std::vector<sockaddr_storage> out;
  const int rc = ::getaddrinfo(addr.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    *error = ::gai_strerror(rc);
    return out;
  }
  for (addrinfo* a = res; a; a = a->ai_next) {
    if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
    sockaddr_storage ss{};
    std::memcpy(&ss, a->ai_addr, a->ai_addrlen);
    out.push_back(ss);
  }
  ::freeaddrinfo(res);
  return out;
}

}  // namespace

int find_free_port(const std::string& addr) {
  std::string resolve_error;
  const auto addresses = resolve_addresses(addr, &resolve_error);
  TORCH_CHECK(!addresses.empty(), "master address '", addr, "' does not resolve to an IPv4 or IPv6 address (",
              resolve_error.empty() ? std::string("no address") : resolve_error,
              "): give one of this machine's addresses, e.g. --master-addr 127.0.0.1, localhost or ::1");
  std::string bind_error;
  for (const auto& a : addresses) {
    sockaddr_storage sa = a;
    const socklen_t len = sa.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    if (sa.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(&sa)->sin6_port = 0;
    else reinterpret_cast<sockaddr_in*>(&sa)->sin_port = 0;
    const int fd = ::socket(sa.ss_family, SOCK_STREAM, 0);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sa), len) != 0) {
      bind_error = std::strerror(errno);
      if (fd >= 0) ::close(fd);
      continue;
    }
    socklen_t got = sizeof(sa);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &got);
    ::close(fd);
    return ntohs(sa.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&sa)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&sa)->sin_port);
  }
  TORCH_CHECK(false, "cannot bind a socket on ", addr, " to find a free port: ", bind_error,
              " (a local launch hosts the rendezvous on this machine: give one of its addresses, e.g. --master-addr "
              "127.0.0.1, localhost or ::1)");
}

void check_port_free(const std::string& addr, int port) {
  TORCH_CHECK(port > 0 && port < 65536, "port ", port, " is outside [1, 65535]");
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  TORCH_CHECK(fd >= 0, "cannot create a socket to check port ", port, ": ", std::strerror(errno));
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));  // as the rendezvous store does
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_ANY);  // the store listens on every interface
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0 && ::listen(fd, 1) == 0;
  const int err = errno;
  ::close(fd);
  TORCH_CHECK(ok, "port ", port, " on ", addr, " is already in use (", std::strerror(err),
              "): rank 0 could not host the rendezvous there; choose another --master-port, or omit it to let ",
              "the launcher pick a free one");
}

}  // namespace launch
}  // namespace lowrank
