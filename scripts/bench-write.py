#!/usr/bin/env python3
"""Helpers for the write benchmarks of scripts/bench (see scripts/bench-write.sh).

  corpus OUT.tar MIB        build the mixed corpus tar; prints "bytes files symlinks share lib random"
  create DIR N SIZE FLUSH   create N files of SIZE bytes in DIR, then flush; prints seconds
  stat DIR N SIZE           os.stat the N files (checks their size); prints seconds
  delete DIR N FLUSH        unlink the N files, then flush; prints seconds
  flush FLUSH               make everything written so far durable
  randwrite FILE SECONDS    4 KiB pwrites at random aligned offsets for SECONDS, then fsync;
                            prints "ios seconds" (the fallback when fio is unusable)
  fio-ios JSON              "ios seconds" of the first job of a fio JSON report

FLUSH is fsync:PATH (fsync of PATH, for our mount a flush of the whole volume),
syncfs:PATH (syncfs(2) of the filesystem holding PATH) or zfs:DATASET (setting a user
property waits for a zfs transaction group sync; nothing else reaches zfs-fuse's daemon).
"""
import ctypes
import json
import os
import random
import subprocess
import sys
import tarfile
import time


def flush(spec):
    kind, _, target = spec.partition(":")
    if kind == "fsync":
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    elif kind == "syncfs":
        fd = os.open(target, os.O_RDONLY)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.syncfs(fd) != 0:
                raise OSError(ctypes.get_errno(), "syncfs " + target)
        finally:
            os.close(fd)
    elif kind == "zfs":
        subprocess.run(["zfs", "set", "bench:sync=%d" % time.time_ns(), target], check=True)
    else:
        sys.exit("bench-write.py: bad flush spec " + spec)


def name(directory, i):
    return os.path.join(directory, "f%06d" % i)


def create(directory, count, size, spec):
    payload = bytes(random.Random(1).getrandbits(8) for _ in range(size))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    start = time.perf_counter()
    for i in range(count):
        fd = os.open(name(directory, i), flags, 0o644)
        os.write(fd, payload)
        os.close(fd)
    flush(spec)
    return time.perf_counter() - start


def stat(directory, count, size):
    start = time.perf_counter()
    for i in range(count):
        if os.stat(name(directory, i)).st_size != size:
            sys.exit("bench-write.py: %s is not %d bytes" % (name(directory, i), size))
    return time.perf_counter() - start


def delete(directory, count, spec):
    start = time.perf_counter()
    for i in range(count):
        os.unlink(name(directory, i))
    flush(spec)
    return time.perf_counter() - start


def randwrite(path, seconds):
    blocks = os.path.getsize(path) // 4096
    rng = random.Random(2)
    buffer = bytearray(rng.randbytes(4096))
    fd = os.open(path, os.O_WRONLY)
    ios = 0
    start = time.perf_counter()
    stop = start + seconds
    while time.perf_counter() < stop:
        buffer[0:8] = ios.to_bytes(8, "little")  # every block different
        os.pwrite(fd, buffer, rng.randrange(blocks) * 4096)
        ios += 1
    os.fsync(fd)
    elapsed = time.perf_counter() - start
    os.close(fd)
    return ios, elapsed


def candidates(root):
    """Regular files and symlinks under root, each inode once, sorted by path."""
    seen = set()
    found = []
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for entry in sorted(files):
            path = os.path.join(directory, entry)
            try:
                path.encode("utf-8")
                st = os.lstat(path)
            except (OSError, UnicodeEncodeError):
                continue
            if os.path.islink(path):
                found.append((path, 0))
            elif os.path.isfile(path) and (st.st_dev, st.st_ino) not in seen and st.st_size <= 64 << 20:
                seen.add((st.st_dev, st.st_ino))
                found.append((path, st.st_size))
    return found


def corpus(out, mib):
    """About MIB MiB of file content: 40% sampled from /usr/share (documentation, text,
    locale and data files), 45% from /usr/lib (shared libraries, binaries, scripts), 15%
    random bytes in files of 64 KiB to 8 MiB. Seeded, so the same machine gives the same tar."""
    target = mib << 20
    rng = random.Random(42)
    chosen = []
    parts = {}
    for root, share in (("/usr/share", 0.40), ("/usr/lib", 0.45)):
        pool = candidates(root)
        rng.shuffle(pool)
        quota = int(target * share)
        total = 0
        for path, size in pool:
            if total >= quota:
                break
            if total + size > quota + (1 << 20):
                continue
            chosen.append(path)
            total += size
        parts[root] = total
    chosen.sort()
    files = symlinks = content = 0
    with tarfile.open(out + ".tmp", "w", format=tarfile.GNU_FORMAT) as tar:
        for path in chosen:
            try:
                info = tar.gettarinfo(path, arcname=path.lstrip("/"))
                if info.issym():
                    tar.addfile(info)
                    symlinks += 1
                else:
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                    files += 1
                    content += info.size
            except OSError:
                continue
        random_bytes = 0
        index = 0
        while content < target:
            size = min(rng.randrange(64 << 10, 8 << 20), target - content)
            info = tarfile.TarInfo("random/r%04d.bin" % index)
            info.size = size
            info.mode = 0o644
            info.mtime = 1700000000
            tar.addfile(info, _Bytes(rng.randbytes(size)))
            files += 1
            content += size
            random_bytes += size
            index += 1
    os.rename(out + ".tmp", out)
    return "%d %d %d %d %d %d" % (content, files, symlinks, parts["/usr/share"], parts["/usr/lib"], random_bytes)


class _Bytes:
    def __init__(self, data):
        self.data = memoryview(data)
        self.offset = 0

    def read(self, size=-1):
        end = len(self.data) if size < 0 else self.offset + size
        chunk = self.data[self.offset:end]
        self.offset += len(chunk)
        return bytes(chunk)


def fio_ios(path):
    job = json.load(open(path))["jobs"][0]
    write = job["write"]
    # fio's runtime for the job includes the end_fsync.
    return write["total_ios"], write["runtime"] / 1000.0


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    command, args = argv[1], argv[2:]
    if command == "corpus":
        print(corpus(args[0], int(args[1])))
    elif command == "create":
        print("%.6f" % create(args[0], int(args[1]), int(args[2]), args[3]))
    elif command == "stat":
        print("%.6f" % stat(args[0], int(args[1]), int(args[2])))
    elif command == "delete":
        print("%.6f" % delete(args[0], int(args[1]), args[2]))
    elif command == "flush":
        flush(args[0])
    elif command == "randwrite":
        print("%d %.6f" % randwrite(args[0], float(args[1])))
    elif command == "fio-ios":
        print("%d %.6f" % fio_ios(args[0]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
