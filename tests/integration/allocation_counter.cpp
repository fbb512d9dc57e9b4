// The replaceable global allocation functions of the integration test binary: malloc and free,
// with a per-thread count of allocations for CountAllocations. (The nothrow forms of libstdc++
// call these; the aligned forms are not counted.)
#include "integration/allocation_counter.hpp"

#include <cstdlib>
#include <new>

namespace {
thread_local bool t_counting = false;
thread_local uint64_t t_allocations = 0;

void* allocate(std::size_t n) {
    if (t_counting) ++t_allocations;
    if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t n) {
    return allocate(n);
}
void* operator new[](std::size_t n) {
    return allocate(n);
}
void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete[](void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    std::free(p);
}

namespace calloutd::test {

CountAllocations::CountAllocations() : start_(t_allocations), was_counting_(t_counting) {
    t_counting = true;
}

CountAllocations::~CountAllocations() {
    t_counting = was_counting_;
}

uint64_t CountAllocations::count() const {
    return t_allocations - start_;
}

}  // namespace calloutd::test
