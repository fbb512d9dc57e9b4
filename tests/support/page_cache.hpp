// What of a file is in the page cache, for tests of log.write_behind.
#pragma once

#include <cstddef>
#include <string>

namespace calloutd::test {

// The share (0..1) of the pages of [0, bytes) of fd's file that are in the page cache; -1 when
// it cannot be seen (mmap or mincore failed).
double cached_share(int fd, size_t bytes);

// True when files in dir live in a page cache that write-behind can drop (not tmpfs, whose
// pages are the file).
bool page_cache_can_drop(const std::string& dir);

}  // namespace calloutd::test
