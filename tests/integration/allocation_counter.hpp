// Counts the operator new calls this thread makes while a CountAllocations is alive: for tests of
// paths that must not allocate (a cached answer). The integration test binary's operator new and
// delete are replaced for it (allocation_counter.cpp): malloc and free, counted when asked.
#pragma once

#include <cstdint>

namespace calloutd::test {

class CountAllocations {
  public:
    CountAllocations();
    ~CountAllocations();
    CountAllocations(const CountAllocations&) = delete;
    CountAllocations& operator=(const CountAllocations&) = delete;
    // Allocations by this thread since construction.
    uint64_t count() const;

  private:
    uint64_t start_;
    bool was_counting_;
};

}  // namespace calloutd::test
