#!/usr/bin/env python3
"""How much of a file's page cache sits in large folios.

Usage (as root, the file read once beforehand so that it is cached):
    python3 benches/folios.py FILE [PAGES]

Maps the first PAGES pages (default 8192: 32 MiB) of FILE, touches each, and
looks every page up in /proc/self/pagemap and /proc/kpageflags: a page that is
the head or a tail of a compound page belongs to a large folio. Prints the
number of resident pages and how many of them are in large folios. Used to
answer whether the kernel gives a FUSE mount's files large folios (issue 21).
"""
import mmap
import os
import struct
import sys

KPF_COMPOUND_HEAD = 15
KPF_COMPOUND_TAIL = 16
PAGE = 4096


def mapping_start(path, size):
    real = os.path.realpath(path)
    for line in open("/proc/self/maps"):
        parts = line.split()
        if len(parts) >= 6 and parts[5] == real:
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if end - start >= size:
                return start
    raise SystemExit(f"{path}: mapping not found in /proc/self/maps")


def folios(path, npages):
    fd = os.open(path, os.O_RDONLY)
    size = min(os.fstat(fd).st_size // PAGE, npages) * PAGE
    if size == 0:
        raise SystemExit(f"{path}: empty")
    m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    for off in range(0, size, PAGE):
        m[off]
    start = mapping_start(path, size)
    pagemap = os.open("/proc/self/pagemap", os.O_RDONLY)
    kflags = os.open("/proc/kpageflags", os.O_RDONLY)
    resident = large = 0
    for i in range(size // PAGE):
        entry = struct.unpack("Q", os.pread(pagemap, 8, (start // PAGE + i) * 8))[0]
        if not (entry >> 63) & 1:
            continue
        pfn = entry & ((1 << 55) - 1)
        flags = struct.unpack("Q", os.pread(kflags, 8, pfn * 8))[0]
        resident += 1
        if (flags >> KPF_COMPOUND_HEAD) & 1 or (flags >> KPF_COMPOUND_TAIL) & 1:
            large += 1
    return resident, large


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    n = int(sys.argv[2]) if len(sys.argv) == 3 else 8192
    resident, large = folios(sys.argv[1], n)
    print(f"{sys.argv[1]}: {resident} resident pages, {large} in large folios")
