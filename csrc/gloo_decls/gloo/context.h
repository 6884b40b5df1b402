// See README.md: declarations only. ProcessGroupGloo's inline setTimeout
// names Context::setTimeout; radvox never calls it (the group's vtable and
// that function live in libtorch_cpu), so the member is declared, not defined.
#pragma once
#include <chrono>
namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
} // namespace gloo
