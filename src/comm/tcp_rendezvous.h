#pragma once
// Internal to src/comm (not installed): the TCP rendezvous that make_tcp_communicator runs before
// it builds the gloo group. Only comm/ includes c10d; this header is included by
// process_group_communicator.cpp and tcp_rendezvous.cpp alone.
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <exception>
#include <string>

#include "lowrank/comm/communicator.h"

namespace lowrank {
namespace comm {
namespace detail {

/// An exception's message without a C++ backtrace.
std::string message_of(const std::exception& e);

/// Rank `rank` of `world_size` meets the others at addr:port: rank 0 hosts a c10d::TCPStore there,
/// the others connect to it, and the ranks check through the store that they form one group
/// (tcp_rendezvous.cpp walks through the protocol). Returns the store once rank 0 confirmed the
/// group; fails, naming the mistake, otherwise. Expects world_size > 1 and validated arguments.
c10::intrusive_ptr<c10d::Store> rendezvous_store(int rank, int world_size, const std::string& master_addr,
                                                 int master_port, const CommOptions& options);

}  // namespace detail
}  // namespace comm
}  // namespace lowrank
