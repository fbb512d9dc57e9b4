// mincore(2) of a read-only mapping: mapping a file does not bring its pages in.
#include "support/page_cache.hpp"

#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <vector>

namespace calloutd::test {

double cached_share(int fd, size_t bytes) {
    void* map = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) return -1;
    size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> vec((bytes + page - 1) / page);
    int rc = ::mincore(map, bytes, vec.data());
    ::munmap(map, bytes);
    if (rc != 0 || vec.empty()) return -1;
    size_t in = 0;
    for (unsigned char c : vec) in += (c & 1) != 0;
    return static_cast<double>(in) / static_cast<double>(vec.size());
}

bool page_cache_can_drop(const std::string& dir) {
    struct statfs fs {};
    return ::statfs(dir.c_str(), &fs) == 0 && fs.f_type != TMPFS_MAGIC;
}

}  // namespace calloutd::test
