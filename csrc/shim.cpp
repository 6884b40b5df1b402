// Small C++ shim for the few libtorch calls tch does not expose.
// Compiled by build.rs against the same libtorch headers tch uses.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

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

// CPU autocast (bf16): tch only switches CUDA autocast.
void radvox_set_cpu_autocast(bool enabled) {
  at::autocast::set_autocast_enabled(at::kCPU, enabled);
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  if (!enabled) at::autocast::clear_cache();
}

bool radvox_cpu_autocast_enabled() { return at::autocast::is_autocast_enabled(at::kCPU); }
}
