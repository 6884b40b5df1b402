// Small C++ shim for the few libtorch calls tch does not expose.
// Compiled by build.rs against the same libtorch headers tch uses.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <atomic>
#include <cstring>
#include <dlfcn.h>
#include <string>

#include "error.h"

// Every entry point below catches every C++ exception: none may cross the
// extern "C" boundary into Rust (undefined behaviour). Fallible calls return
// false and leave the message for radvox_last_error.

namespace {
thread_local std::string g_last_error;
} // namespace

bool radvox_fail(const char *what) {
  g_last_error = what;
  return false;
}

namespace {

// Host tensor bytes in use and their peak, counted by CountingCpuAllocator.
std::atomic<int64_t> g_host_current{0};
std::atomic<int64_t> g_host_peak{0};

// Every allocation carries a 64-byte header (keeps 64-byte alignment) that
// records its size, so the deleter can count the free. The data pointer is
// its own context (a "simple" DataPtr), so raw_allocate/raw_deleter work.
constexpr size_t kHeader = 64;

void counting_delete(void *data) {
  if (data == nullptr) return;
  char *base = static_cast<char *>(data) - kHeader;
  g_host_current.fetch_sub(*reinterpret_cast<int64_t *>(base));
  c10::free_cpu(base);
}

struct CountingCpuAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    char *base = static_cast<char *>(c10::alloc_cpu(n + kHeader));
    *reinterpret_cast<int64_t *>(base) = static_cast<int64_t>(n);
    int64_t now = g_host_current.fetch_add(static_cast<int64_t>(n)) + static_cast<int64_t>(n);
    int64_t peak = g_host_peak.load();
    while (now > peak && !g_host_peak.compare_exchange_weak(peak, now)) {
    }
    void *data = base + kHeader;
    return {data, data, &counting_delete, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &counting_delete; }
  void copy_data(void *dest, const void *src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

} // namespace

extern "C" {

// Handles that can reach a tensor's memory: handles to its TensorImpl
// (shallow clones) plus other TensorImpls sharing its storage (views),
// counting this handle once. A pooled buffer may be reused only at 1.
int64_t radvox_memory_owners(const at::Tensor *t) {
  try {
    if (!t->defined() || !t->has_storage()) return -1;
    return (int64_t)t->use_count() + (int64_t)t->storage().use_count() - 1;
  } catch (...) {
    return -1;
  }
}

// Copies this thread's last error message into buf (NUL-terminated,
// truncated to n bytes) and returns its full length.
size_t radvox_last_error(char *buf, size_t n) {
  if (n > 0) {
    size_t k = std::min(n - 1, g_last_error.size());
    std::memcpy(buf, g_last_error.data(), k);
    buf[k] = 0;
  }
  return g_last_error.size();
}

// CPU autocast (bf16): tch only switches CUDA autocast.
bool radvox_set_cpu_autocast(bool enabled) {
  try {
    at::autocast::set_autocast_enabled(at::kCPU, enabled);
    at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
    if (!enabled) at::autocast::clear_cache();
    return true;
  } catch (const std::exception &e) {
    return radvox_fail(e.what());
  } catch (...) {
    return radvox_fail("unknown C++ exception");
  }
}

bool radvox_cpu_autocast_enabled() {
  try {
    return at::autocast::is_autocast_enabled(at::kCPU);
  } catch (...) {
    return false;
  }
}

// Whether autograd records ops on this thread (false under no_grad).
bool radvox_grad_enabled() {
  try {
    return c10::GradMode::is_enabled();
  } catch (...) {
    return true;
  }
}

// Routes libtorch's CPU tensor allocations through a counting allocator
// (process-wide, from now on; tensors allocated before keep their deleter).
// Returns false if libtorch refused the switch.
bool radvox_count_host_tensors() {
  static CountingCpuAllocator allocator;
  try {
    c10::SetCPUAllocator(&allocator, /*priority=*/100);
    return c10::GetCPUAllocator() == &allocator;
  } catch (...) {
    return false;
  }
}

// Host tensor bytes allocated through the counting allocator now and at peak.
int64_t radvox_host_tensor_bytes() { return g_host_current.load(); }
int64_t radvox_host_tensor_peak() { return g_host_peak.load(); }
void radvox_host_reset_peak() { g_host_peak.store(g_host_current.load()); }

// One aggregate statistic of the CUDA caching allocator on `device`
// (allocated or reserved bytes: current, peak); false without CUDA.
static bool cuda_stat(int64_t device, bool reserved, int64_t *current, int64_t *peak) {
  try {
    auto stats = c10::getDeviceAllocator(c10::DeviceType::CUDA)->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    auto &all = (reserved ? stats.reserved_bytes : stats.allocated_bytes)[static_cast<size_t>(
        c10::CachingAllocator::StatType::AGGREGATE)];
    *current = all.current;
    *peak = all.peak;
    return true;
  } catch (...) {
    return false;
  }
}

// The CUDA caching allocator's allocated bytes (current, peak) on `device`.
bool radvox_cuda_allocated(int64_t device, int64_t *current, int64_t *peak) {
  return cuda_stat(device, false, current, peak);
}

// The same for the bytes the caching allocator holds from the driver.
bool radvox_cuda_reserved(int64_t device, int64_t *current, int64_t *peak) {
  return cuda_stat(device, true, current, peak);
}

bool radvox_cuda_reset_peak(int64_t device) {
  try {
    c10::getDeviceAllocator(c10::DeviceType::CUDA)->resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return true;
  } catch (...) {
    return false;
  }
}

// Free and total memory of the current CUDA device through the CUDA runtime
// libtorch_cuda already loaded (looked up by name: no CUDA headers needed).
bool radvox_cuda_mem_info(int64_t *free_bytes, int64_t *total_bytes) {
  // No C++ call here (a C function looked up by name): nothing can throw.
  using MemGetInfo = int (*)(size_t *, size_t *);
  auto fn = reinterpret_cast<MemGetInfo>(dlsym(RTLD_DEFAULT, "cudaMemGetInfo"));
  size_t f = 0, t = 0;
  if (fn == nullptr || fn(&f, &t) != 0) return false;
  *free_bytes = static_cast<int64_t>(f);
  *total_bytes = static_cast<int64_t>(t);
  return true;
}

// Leaves autocast fully off with an empty cast cache: after a step unwound
// (an out-of-memory error) inside tch::autocast, its nesting count and cache
// would otherwise keep stale half copies of the weights.
bool radvox_reset_autocast() {
  try {
    int n = at::autocast::decrement_nesting();
    while (n > 0) n = at::autocast::decrement_nesting();
    while (n < 0) n = at::autocast::increment_nesting();
    at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(at::kCUDA, false);
    at::autocast::set_autocast_enabled(at::kCPU, false);
    return true;
  } catch (const std::exception &e) {
    return radvox_fail(e.what());
  } catch (...) {
    return radvox_fail("unknown C++ exception");
  }
}
}
