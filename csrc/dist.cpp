// c10d process groups for radvox's data parallelism: a TCPStore (the
// rendezvous torchrun's agent hosts, or rank 0's own), then Gloo for CPU
// tensors or NCCL for CUDA ones, and the few collectives the trainers use.
// Like every shim entry point, each function catches every C++ exception
// (none may cross into Rust) and reports it through radvox_fail.
#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef RADVOX_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <string>

#include "error.h"

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

// Runs `f`, turning any exception into radvox_fail.
template <typename F> bool guarded(F &&f) {
  try {
    f();
    return true;
  } catch (const c10::Error &e) {
    return radvox_fail(e.what_without_backtrace()); // the message, not libtorch's stack
  } catch (const std::exception &e) {
    return radvox_fail(e.what());
  } catch (...) {
    return radvox_fail("unknown C++ exception");
  }
}

// Waits for a collective, within the group's timeout.
void finish(const Group &g, const c10::intrusive_ptr<c10d::Work> &work) {
  if (!work->wait(g.timeout)) throw std::runtime_error("collective did not complete");
}

c10::intrusive_ptr<c10d::Backend> make_gloo(const c10::intrusive_ptr<c10d::Store> &store, int rank, int world,
                                       std::chrono::milliseconds timeout) {
  auto options = c10::make_intrusive<c10d::ProcessGroupGloo::Options>(timeout);
  const char *ifname = std::getenv("GLOO_SOCKET_IFNAME");
  options->devices.push_back(ifname != nullptr && *ifname != 0
                                 ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                                 : c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
}

c10::intrusive_ptr<c10d::Backend> make_nccl(const c10::intrusive_ptr<c10d::Store> &store, int rank, int world,
                                       std::chrono::milliseconds timeout) {
#ifdef RADVOX_NCCL
  auto options = c10::make_intrusive<c10d::ProcessGroupNCCL::Options>();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
#else
  (void)store, (void)rank, (void)world, (void)timeout;
  throw std::runtime_error("this radvox was built without NCCL headers (nccl.h, cuda_runtime_api.h)");
#endif
}

} // namespace

extern "C" {

// Joins the group `rank` of `world` through the TCPStore at host:port
// (hosted by rank 0 unless `agent_store`: torchrun's agent hosts it and
// every rank is a client under the prefix `/worker/attempt_<restart>`);
// backend 0 is Gloo, 1 NCCL. On success *out owns the group.
bool radvox_dist_init(const char *host, int port, int rank, int world, bool agent_store, int restart,
                      int64_t timeout_ms, int backend, void **out) {
  return guarded([&] {
    std::chrono::milliseconds timeout(timeout_ms);
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(port);
    so.isServer = !agent_store && rank == 0;
    so.numWorkers = agent_store ? std::nullopt : std::optional<std::size_t>(world);
    so.waitWorkers = !agent_store;
    so.timeout = timeout;
    so.multiTenant = true;
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(host, so);
    if (agent_store) {
      store = c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + std::to_string(restart), store);
    }
    store = c10::make_intrusive<c10d::PrefixStore>("radvox/", store);
    auto g = new Group{store, nullptr, timeout};
    try {
      g->backend = backend == 1 ? make_nccl(store, rank, world, timeout) : make_gloo(store, rank, world, timeout);
    } catch (...) {
      delete g;
      throw;
    }
    *out = g;
  });
}

// op 0: sum, 1: max; in place.
bool radvox_dist_allreduce(void *group, const at::Tensor *t, int op) {
  return guarded([&] {
    auto &g = *static_cast<Group *>(group);
    std::vector<at::Tensor> v{*t};
    c10d::AllreduceOptions o;
    o.reduceOp = op == 1 ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
    o.timeout = g.timeout;
    finish(g, g.backend->allreduce(v, o));
  });
}

// Overwrites `t` with rank `root`'s tensor.
bool radvox_dist_broadcast(void *group, const at::Tensor *t, int root) {
  return guarded([&] {
    auto &g = *static_cast<Group *>(group);
    std::vector<at::Tensor> v{*t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.timeout = g.timeout;
    finish(g, g.backend->broadcast(v, o));
  });
}

bool radvox_dist_barrier(void *group) {
  return guarded([&] {
    auto &g = *static_cast<Group *>(group);
    c10d::BarrierOptions o;
    o.timeout = g.timeout;
    finish(g, g.backend->barrier(o));
  });
}

// Leaves the group (shuts the backend down) and frees it.
void radvox_dist_free(void *group) {
  auto g = static_cast<Group *>(group);
  try {
    g->backend->shutdown();
  } catch (...) {
  }
  try {
    delete g;
  } catch (...) {
  }
}
}
