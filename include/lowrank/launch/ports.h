#pragma once
// The rendezvous port of a local launch: rank 0 hosts the store on master_addr:port, so the port
// must be free on this machine before any worker starts.
#include <string>

namespace lowrank {
namespace launch {

/// A TCP port that is free on `addr` right now (bound to port 0, then released). `addr` is an IPv4
/// or IPv6 address or a host name ("localhost"); throws naming it when it does not resolve to an
/// address of this machine.
int find_free_port(const std::string& addr = "127.0.0.1");
/// Throws "port <p> on <addr> is already in use ..." when a listening socket cannot bind it.
void check_port_free(const std::string& addr, int port);

}  // namespace launch
}  // namespace lowrank
