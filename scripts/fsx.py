#!/usr/bin/env python3
"""fsx-style random-operation checker for one file.

Seeded random operations on one file -- pwrite, read, truncate (grow and shrink), mmap
write and read, copy_file_range inside the file, fallocate in five modes, fsync and
SEEK_DATA/SEEK_HOLE walks -- checked against an in-memory model (a bytearray): after
every operation fstat's st_size must equal the model's size and the file must read back
as the model (the whole file every --check-every operations, the touched range always).
With --remount-cmd the file is closed every --remount-every operations, the command
runs (e.g. unmount, fsck, mount) and the file is reopened and compared in full.

On a failure the seed, the command line that replays it and the tail of the operation
log are printed. The sequence of operations depends only on the seed and the options, so
the same command line replays the same run.

Exit status: 0 every check passed, 1 a check failed (or an operation was unsupported and
--allow-unsupported was not given), 2 bad usage or the file could not be set up.
"""

import argparse
import collections
import ctypes
import errno
import json
import mmap
import os
import random
import shlex
import subprocess
import sys
import time

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

UNSUPPORTED_ERRNOS = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}

# Operation names, their weights, and for fallocate the mode each one passes.
OPS = [
    ("read", 10),
    ("write", 20),
    ("truncate", 7),
    ("mapwrite", 8),
    ("mapread", 6),
    ("copy", 8),
    ("falloc", 3),          # mode 0
    ("falloc-keep", 3),     # KEEP_SIZE
    ("punch", 4),           # PUNCH_HOLE | KEEP_SIZE
    ("zero", 3),            # ZERO_RANGE
    ("zero-keep", 3),       # ZERO_RANGE | KEEP_SIZE
    ("seek", 5),            # SEEK_DATA / SEEK_HOLE walk
    ("fsync", 2),
]
FALLOC_MODES = {
    "falloc": 0,
    "falloc-keep": FALLOC_FL_KEEP_SIZE,
    "punch": FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
    "zero": FALLOC_FL_ZERO_RANGE,
    "zero-keep": FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
}
MODE_NAMES = {
    0: "0",
    FALLOC_FL_KEEP_SIZE: "KEEP_SIZE",
    FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE: "PUNCH_HOLE|KEEP_SIZE",
    FALLOC_FL_ZERO_RANGE: "ZERO_RANGE",
    FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE: "ZERO_RANGE|KEEP_SIZE",
}
# Which unsupported-operation class an operation belongs to (skipped together).
OP_CLASS = {"mapwrite": "mmap", "mapread": "mmap", "seek": "seek"}


class CheckFailure(Exception):
    pass


class Unsupported(Exception):
    def __init__(self, what, err):
        super().__init__(what)
        self.what = what
        self.err = err


def parse_size(text):
    text = text.strip().lower()
    mult = 1
    for suffix, m in (("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30)):
        if text.endswith(suffix):
            text, mult = text[:-1], m
            break
    try:
        value = int(text, 0) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError("sizes must not be negative")
    return value


_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_libc.fallocate.restype = ctypes.c_int


def fallocate(fd, mode, off, length):
    if _libc.fallocate(fd, mode, off, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def hexdump(data, base):
    out = []
    for i in range(0, len(data), 16):
        chunk = data[i:i + 16]
        out.append(f"    {base + i:#010x}: " + " ".join(f"{b:02x}" for b in chunk))
    return "\n".join(out)


class FSX:
    def __init__(self, args):
        self.args = args
        self.path = args.file
        self.rng = random.Random(args.seed)
        self.model = bytearray()
        self.fd = -1
        self.opnum = 0
        self.log = collections.deque(maxlen=args.log_tail)
        self.logfile = open(args.logfile, "w") if args.logfile else None
        self.counts = collections.Counter()
        self.skipped = collections.Counter()
        self.unsupported = {}          # class -> (op number, message)
        self.disabled = set(args.disable)
        self.remounts = 0
        self.seek_walks = 0
        self.seek_retries = 0
        self.hole_bytes_reported = 0
        self.gran = args.expect_holes
        self.maybe_data = set()        # blocks (of --expect-holes bytes) that may hold data
        self.names = [name for name, _ in OPS]
        self.weights = [w for _, w in OPS]

    # ----- bookkeeping -------------------------------------------------------------------
    def note(self, text):
        line = f"#{self.opnum} {text}"
        self.log.append(line)
        if self.logfile:
            self.logfile.write(line + "\n")
        if self.args.verbose:
            print(line)

    def mark_data(self, off, length):
        if self.gran and length > 0:
            for b in range(off // self.gran, (off + length - 1) // self.gran + 1):
                self.maybe_data.add(b)

    def mark_punched(self, off, end):
        """Blocks lying wholly inside [off, end) hold no data any more."""
        if self.gran:
            first = -(-off // self.gran)
            for b in range(first, end // self.gran):
                self.maybe_data.discard(b)

    def mark_truncated(self, size):
        if self.gran:
            first = -(-size // self.gran)
            self.maybe_data = {b for b in self.maybe_data if b < first}

    def size_changed(self, old, new):
        """The kernel zeroes the rest of the page holding the old EOF when a file grows, and
        of the page holding the new EOF when it shrinks; written back, those zeros may
        allocate the block holding that EOF."""
        if self.gran and old != new:
            eof = old if new > old else new
            if eof % self.gran:
                self.maybe_data.add(eof // self.gran)

    # ----- model updates -----------------------------------------------------------------
    def model_write(self, off, data):
        end = off + len(data)
        if end > len(self.model):
            self.model.extend(bytes(end - len(self.model)))
        self.model[off:end] = data

    def model_truncate(self, size):
        if size < len(self.model):
            del self.model[size:]
        else:
            self.model.extend(bytes(size - len(self.model)))

    # ----- random choices ----------------------------------------------------------------
    def pick_offset(self, limit):
        """An offset in [0, limit), often aligned to 4 KiB or 64 KiB."""
        if limit <= 0:
            return 0
        off = self.rng.randrange(limit)
        r = self.rng.random()
        if r < 0.2:
            off &= ~0xFFFF
        elif r < 0.45:
            off &= ~0xFFF
        return off

    def pick_length(self, limit):
        """A length in [1, limit], often a multiple of 4 KiB or 64 KiB."""
        limit = min(limit, self.args.maxlen)
        if limit <= 0:
            return 0
        r = self.rng.random()
        if r < 0.15 and limit >= 0x10000:
            return self.rng.randint(1, limit // 0x10000) * 0x10000
        if r < 0.35 and limit >= 0x1000:
            return self.rng.randint(1, limit // 0x1000) * 0x1000
        if r < 0.5:
            return self.rng.randint(1, min(limit, 512))
        return self.rng.randint(1, limit)

    def make_data(self, length):
        r = self.rng.random()
        if r < 0.05:
            return bytes(length)                      # zeros (hole detection, autozero)
        if r < 0.35:
            return self.rng.randbytes(length)         # incompressible
        # A pattern naming the operation: compressible, never zero, stale data recognisable.
        tag = (self.opnum * 7) & 0xFF
        start = self.rng.randrange(251)
        cycle = bytes((start + i) % 251 + 1 for i in range(251))
        table = bytes((v ^ tag) or 1 for v in range(256))
        return (cycle * (length // 251 + 1))[:length].translate(table)

    # ----- checks ------------------------------------------------------------------------
    def fail(self, message):
        raise CheckFailure(message)

    def check_size(self, where):
        st = os.fstat(self.fd)
        if st.st_size != len(self.model):
            self.fail(f"{where}: fstat st_size {st.st_size:#x}, model size {len(self.model):#x}")

    def compare(self, off, got, where):
        expected = bytes(self.model[off:off + len(got)])
        if got == expected:
            return
        n = min(len(got), len(expected))
        first = next((i for i in range(n) if got[i] != expected[i]), n)
        last = max((i for i in range(n) if got[i] != expected[i]), default=first)
        bad = sum(1 for i in range(n) if got[i] != expected[i])
        lo = max(0, first - 8) & ~0xF
        hi = min(n, first + 40)
        msg = [f"{where}: data mismatch at offset {off + first:#x} ({bad} bytes differ between "
               f"{off + first:#x} and {off + last:#x}; read {len(got):#x} bytes at {off:#x}, "
               f"model size {len(self.model):#x})",
               "  file:", hexdump(got[lo:hi], off + lo),
               "  model:", hexdump(expected[lo:hi], off + lo)]
        if len(got) != len(expected):
            msg.append(f"  and the read returned {len(got):#x} bytes, the model has {len(expected):#x} there")
        self.fail("\n".join(msg))

    def read_range(self, off, length, where):
        got = os.pread(self.fd, length, off)
        expect_len = max(0, min(length, len(self.model) - off))
        if len(got) != expect_len:
            self.compare(off, got, where)  # shows the data difference if there is one
            self.fail(f"{where}: pread({length:#x} at {off:#x}) returned {len(got):#x} bytes, "
                      f"expected {expect_len:#x} (model size {len(self.model):#x})")
        self.compare(off, got, where)

    def check_all(self, where):
        self.check_size(where)
        size = len(self.model)
        got = bytearray()
        off = 0
        while True:                       # read to EOF, one more byte than the model has
            chunk = os.pread(self.fd, max(1, size + 1 - off), off)
            if not chunk:
                break
            got += chunk
            off += len(chunk)
            if off > size:
                break
        if len(got) != size:
            self.compare(0, bytes(got[:size]), where)
            self.fail(f"{where}: reading the whole file gave {len(got):#x} bytes, model size {size:#x}")
        self.compare(0, bytes(got), where)

    def lseek(self, off, whence):
        """lseek returning None for ENXIO; raises Unsupported for an unsupported whence."""
        try:
            return os.lseek(self.fd, off, whence)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return None
            if e.errno in UNSUPPORTED_ERRNOS or e.errno == errno.EINVAL:
                name = "SEEK_DATA" if whence == os.SEEK_DATA else "SEEK_HOLE"
                raise Unsupported(f"lseek({name})", e)
            raise

    def requery(self, off):
        """SEEK_DATA and SEEK_HOLE from `off` asked again (a changing answer is a race)."""
        out = []
        for whence, name in ((os.SEEK_DATA, "SEEK_DATA"), (os.SEEK_HOLE, "SEEK_HOLE")):
            try:
                r = self.lseek(off, whence)
                out.append(f"{name}={'ENXIO' if r is None else hex(r)}")
            except (OSError, Unsupported) as e:
                out.append(f"{name}: {e}")
        block = self.gran or 0x10000
        lo = off // block * block
        nonzero = [i for i in range(lo, min(lo + block, len(self.model))) if self.model[i]]
        where = f"{nonzero[0]:#x}..{nonzero[-1]:#x}" if nonzero else "none"
        return (f" [asked again from {off:#x}: {', '.join(out)}; the model's nonzero bytes in "
                f"[{lo:#x}, {lo + block:#x}): {where}]")

    def check_seek(self, where):
        """Walks the file with SEEK_DATA/SEEK_HOLE: every nonzero byte lies in a data range,
        the last hole ends at EOF, offsets at or past EOF give ENXIO, and (--expect-holes)
        blocks that can hold no data are reported as holes."""
        self.seek_walks += 1
        size = len(self.model)
        ranges = []
        off = 0
        retries = 0
        while off < size:
            d = self.lseek(off, os.SEEK_DATA)
            if d is None:
                break
            if d < off or d >= size:
                self.fail(f"{where}: lseek({off:#x}, SEEK_DATA) = {d:#x}, outside [{off:#x}, {size:#x})"
                          + self.requery(off))
            h = self.lseek(d, os.SEEK_HOLE)
            if h is None:
                self.fail(f"{where}: lseek({d:#x}, SEEK_HOLE) gave ENXIO though {d:#x} < size {size:#x}"
                          + self.requery(d))
            if h == d and self.model[d] == 0 and retries < 3:
                # SEEK_DATA said data, SEEK_HOLE then a hole, where the file holds zeros: a
                # flush in between (another process's fsync, the timer) may have stored an
                # all-zero block as a hole, which changes no byte. Ask again.
                retries += 1
                self.seek_retries += 1
                continue
            if h <= d or h > size:
                self.fail(f"{where}: lseek({d:#x}, SEEK_HOLE) = {h:#x}, outside ({d:#x}, {size:#x}]: "
                          f"SEEK_DATA said {d:#x} is data, SEEK_HOLE that it is a hole" + self.requery(d))
            ranges.append((d, h))
            off = h
            retries = 0
        # Nonzero bytes must lie inside a reported data range.
        prev = 0
        for d, h in ranges + [(size, size)]:
            gap = self.model[prev:d]
            if gap.count(0) != len(gap):
                first = prev + next(i for i, b in enumerate(gap) if b)
                self.fail(f"{where}: byte {first:#x} is {self.model[first]:#04x} in the model but lies in a hole "
                          f"reported by SEEK_DATA/SEEK_HOLE (data ranges: {fmt_ranges(ranges)}; size {size:#x})"
                          + self.requery(prev))
            self.hole_bytes_reported += d - prev
            prev = h
        # The final hole (if any) ends at EOF; at and past EOF both give ENXIO.
        if ranges and ranges[-1][1] < size:
            end = ranges[-1][1]
            h = self.lseek(end, os.SEEK_HOLE)
            if h != end:
                self.fail(f"{where}: lseek({end:#x}, SEEK_HOLE) = {h}, expected {end:#x} (start of the final hole)")
        if size > 0:
            probe = self.rng.randrange(size)
            h = self.lseek(probe, os.SEEK_HOLE)
            if h is None or h < probe or h > size:
                self.fail(f"{where}: lseek({probe:#x}, SEEK_HOLE) = {h}, outside [{probe:#x}, {size:#x}]")
            d = self.lseek(probe, os.SEEK_DATA)
            if d is not None and (d < probe or d >= size):
                self.fail(f"{where}: lseek({probe:#x}, SEEK_DATA) = {d:#x}, outside [{probe:#x}, {size:#x})")
            tail = self.model[probe:size if d is None else d]
            if tail.count(0) != len(tail):
                self.fail(f"{where}: lseek({probe:#x}, SEEK_DATA) = {d} skips nonzero data at "
                          f"{probe + next(i for i, b in enumerate(tail) if b):#x}")
        for past in (size, size + 1, size + 0x10000):
            for whence, name in ((os.SEEK_DATA, "SEEK_DATA"), (os.SEEK_HOLE, "SEEK_HOLE")):
                r = self.lseek(past, whence)
                if r is not None:
                    self.fail(f"{where}: lseek({past:#x}, {name}) = {r:#x} at/after EOF {size:#x}, expected ENXIO")
        if self.gran:
            for b in range(size // self.gran):
                if b in self.maybe_data:
                    continue
                lo, hi = b * self.gran, (b + 1) * self.gran
                for d, h in ranges:
                    if d < hi and h > lo:
                        self.fail(f"{where}: block [{lo:#x}, {hi:#x}) was never written or was punched/truncated "
                                  f"away, but SEEK_DATA/SEEK_HOLE report data there (data ranges: "
                                  f"{fmt_ranges(ranges)}; size {size:#x}; --expect-holes {self.gran})")

    # ----- operations --------------------------------------------------------------------
    def op_read(self):
        size = len(self.model)
        off = self.pick_offset(size + 0x1000)
        length = self.pick_length(self.args.size)
        if length == 0:
            return False
        self.note(f"read off={off:#x} len={length:#x} size={size:#x}")
        self.read_range(off, length, "read")
        return True

    def op_write(self):
        off = self.pick_offset(self.args.size)
        length = self.pick_length(self.args.size - off)
        if length == 0:
            return False
        data = self.make_data(length)
        old = len(self.model)
        self.note(f"write off={off:#x} len={length:#x} size={old:#x}->{max(old, off + length):#x}")
        n = os.pwrite(self.fd, data, off)
        if n != length:
            self.fail(f"write: pwrite returned {n:#x}, expected {length:#x}")
        self.model_write(off, data)
        self.mark_data(off, length)
        self.check_size("write")
        self.read_range(off, length, "write (read back)")
        return True

    def op_truncate(self):
        r = self.rng.random()
        if r < 0.1:
            size = 0
        else:
            size = self.pick_offset(self.args.size + 1)
        old = len(self.model)
        self.note(f"truncate {old:#x}->{size:#x} ({'grow' if size > old else 'shrink' if size < old else 'same'})")
        os.ftruncate(self.fd, size)
        self.model_truncate(size)
        if size < old:
            self.mark_truncated(size)
        self.check_size("truncate")
        lo = max(0, min(old, size) - 0x1000)
        self.read_range(lo, max(old, size) - lo + 0x1000, "truncate (read back)")
        return True

    def op_mapwrite(self):
        size = len(self.model)
        if size == 0:
            return False
        off = self.pick_offset(size)
        length = self.pick_length(size - off)
        data = self.make_data(length)
        self.note(f"mapwrite off={off:#x} len={length:#x} size={size:#x}")
        try:
            m = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as e:
            if e.errno in UNSUPPORTED_ERRNOS or e.errno == errno.ENODEV:
                raise Unsupported("mmap(MAP_SHARED, PROT_WRITE)", e)
            raise
        try:
            m[off:off + length] = data
            m.flush()   # msync(MS_SYNC)
        finally:
            m.close()
        self.model_write(off, data)
        self.mark_data(off, length)
        self.check_size("mapwrite")
        self.read_range(off, length, "mapwrite (read back)")
        return True

    def op_mapread(self):
        size = len(self.model)
        if size == 0:
            return False
        off = self.pick_offset(size)
        length = self.pick_length(size - off)
        self.note(f"mapread off={off:#x} len={length:#x} size={size:#x}")
        try:
            m = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        except OSError as e:
            if e.errno in UNSUPPORTED_ERRNOS or e.errno == errno.ENODEV:
                raise Unsupported("mmap(MAP_SHARED, PROT_READ)", e)
            raise
        try:
            got = m[off:off + length]
        finally:
            m.close()
        self.compare(off, got, "mapread")
        self.mark_data(off, length)      # a read fault may allocate the page (tmpfs)
        return True

    def op_copy(self):
        size = len(self.model)
        if size == 0:
            return False
        src = self.pick_offset(size)
        length = self.pick_length(size - src)
        # A destination whose range does not overlap the source's.
        for _ in range(8):
            dst = self.pick_offset(self.args.size - length + 1)
            if dst + length <= src or dst >= src + length:
                break
        else:
            return False
        old = len(self.model)
        self.note(f"copy src={src:#x} dst={dst:#x} len={length:#x} size={old:#x}->{max(old, dst + length):#x}")
        done = 0
        while done < length:
            try:
                n = os.copy_file_range(self.fd, self.fd, length - done, src + done, dst + done)
            except OSError as e:
                if e.errno in UNSUPPORTED_ERRNOS or e.errno == errno.EXDEV:
                    raise Unsupported("copy_file_range", e)
                raise
            if n == 0:
                self.fail(f"copy: copy_file_range stopped after {done:#x} of {length:#x} bytes "
                          f"(source range inside the file of size {old:#x})")
            done += n
        self.model_write(dst, bytes(self.model[src:src + length]))
        self.mark_data(dst, length)
        self.check_size("copy")
        self.read_range(dst, length, "copy (read destination)")
        return True

    def op_falloc(self, name):
        mode = FALLOC_MODES[name]
        size = len(self.model)
        off = self.pick_offset(self.args.size)
        length = self.pick_length(self.args.size - off)
        if length == 0:
            return False
        end = off + length
        keep = bool(mode & FALLOC_FL_KEEP_SIZE)
        new_size = size if keep else max(size, end)
        self.note(f"fallocate mode={MODE_NAMES[mode]} off={off:#x} len={length:#x} size={size:#x}->{new_size:#x}")
        try:
            fallocate(self.fd, mode, off, length)
        except OSError as e:
            if e.errno in UNSUPPORTED_ERRNOS:
                raise Unsupported(f"fallocate(mode={MODE_NAMES[mode]})", e)
            raise
        if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
            zend = min(end, size)
            if off < zend:
                self.model[off:zend] = bytes(zend - off)
        if not keep and end > size:
            self.model_truncate(end)
        if mode & FALLOC_FL_PUNCH_HOLE:
            self.mark_punched(off, min(end, size))
        else:
            self.mark_data(off, length)      # allocated (perhaps zeroed) blocks may read as data
        self.check_size(f"fallocate({MODE_NAMES[mode]})")
        lo = max(0, off - 0x1000)
        self.read_range(lo, end - lo + 0x1000, f"fallocate({MODE_NAMES[mode]}) (read back)")
        return True

    def op_seek(self):
        self.note(f"seek walk size={len(self.model):#x}")
        self.check_seek("seek")
        return True

    def op_fsync(self):
        self.note("fsync")
        os.fsync(self.fd)
        return True

    # ----- driver ------------------------------------------------------------------------
    def open(self, create=False):
        flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0)
        self.fd = os.open(self.path, flags, 0o644)

    def remount(self):
        self.note(f"close, remount ({self.args.remount_cmd}), reopen")
        os.close(self.fd)
        self.fd = -1
        started = time.monotonic()
        proc = subprocess.run(self.args.remount_cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace")
        if proc.returncode != 0:
            self.fail(f"remount command exited with status {proc.returncode} after op #{self.opnum}:\n"
                      + proc.stdout.rstrip()[-4000:])
        self.remounts += 1
        self.remount_seconds = getattr(self, "remount_seconds", 0.0) + time.monotonic() - started
        self.open()
        self.check_all("after remount")
        self.check_seek_guarded("after remount")

    def check_seek_guarded(self, where):
        if "seek" in self.unsupported or "seek" in self.disabled:
            return
        try:
            self.check_seek(where)
        except Unsupported as u:
            self.record_unsupported("seek", u)

    def record_unsupported(self, cls, u):
        if cls not in self.unsupported:
            self.unsupported[cls] = (self.opnum, f"{u.what}: [Errno {u.err.errno}] {os.strerror(u.err.errno)}")
            print(f"fsx: UNSUPPORTED op #{self.opnum}: {u.what} failed with "
                  f"{errno.errorcode.get(u.err.errno, u.err.errno)} ({os.strerror(u.err.errno)}); "
                  f"skipping further {cls} operations", flush=True)

    def run(self):
        a = self.args
        self.open(create=True)
        self.check_all("after creating the file")
        started = time.monotonic()
        while self.opnum < a.ops:
            self.opnum += 1
            name = self.rng.choices(self.names, self.weights)[0]
            cls = OP_CLASS.get(name, name)
            # The generator state must not depend on which operations are skipped, so that
            # a run with --allow-unsupported or --disable replays the same data: a skipped
            # operation still draws its arguments from a generator of its own.
            if name in self.disabled or cls in self.disabled or cls in self.unsupported:
                self.skipped[name] += 1
                self.rng.random()
                continue
            state = self.rng.getstate()
            size_before = len(self.model)
            try:
                if name.startswith("falloc") or name in ("punch", "zero", "zero-keep"):
                    did = self.op_falloc(name)
                else:
                    did = getattr(self, "op_" + name)()
            except Unsupported as u:
                self.record_unsupported(cls, u)
                self.skipped[name] += 1
                self.rng.setstate(state)
                self.rng.random()
                continue
            except OSError as e:
                self.fail(f"{name}: unexpected error {errno.errorcode.get(e.errno, e.errno)} ({e.strerror})")
            self.size_changed(size_before, len(self.model))
            if did:
                self.counts[name] += 1
            else:
                self.skipped[name] += 1
            if a.check_every and self.opnum % a.check_every == 0:
                self.check_all(f"full check after op #{self.opnum} ({name})")
            if a.remount_cmd and a.remount_every and self.opnum % a.remount_every == 0 and self.opnum < a.ops:
                self.remount()
        self.note("final checks")
        self.check_all("final check")
        self.check_seek_guarded("final check")
        if a.remount_cmd:
            self.remount()
        os.close(self.fd)
        self.fd = -1
        return time.monotonic() - started


def fmt_ranges(ranges, limit=12):
    text = ", ".join(f"[{d:#x},{h:#x})" for d, h in ranges[:limit])
    if len(ranges) > limit:
        text += f", ... ({len(ranges)} ranges)"
    return text or "none"


def replay_command(args):
    cmd = [sys.argv[0], args.file, "--seed", str(args.seed), "--ops", str(args.ops), "--size", str(args.size),
           "--maxlen", str(args.maxlen), "--check-every", str(args.check_every)]
    if args.remount_cmd:
        cmd += ["--remount-cmd", args.remount_cmd, "--remount-every", str(args.remount_every)]
    if args.expect_holes:
        cmd += ["--expect-holes", str(args.expect_holes)]
    if args.allow_unsupported:
        cmd.append("--allow-unsupported")
    if args.disable:
        cmd += ["--disable", ",".join(sorted(args.disable))]
    return shlex.join(cmd)


def main():
    parser = argparse.ArgumentParser(
        prog="fsx.py",
        description="fsx-style random-operation checker for one file: seeded pwrite, read, truncate, "
                    "mmap write/read, copy_file_range, fallocate (0, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE, "
                    "ZERO_RANGE|KEEP_SIZE), fsync and SEEK_DATA/SEEK_HOLE walks, checked against an in-memory model "
                    "after every operation.",
        epilog="Operation names for --disable: " + ", ".join(n for n, _ in OPS) + ", or the classes mmap and seek. "
               "Exit status: 0 passed, 1 a check failed or an operation was unsupported (without "
               "--allow-unsupported), 2 bad usage or setup error.")
    parser.add_argument("file", help="the file to test (created or truncated)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock; printed)")
    parser.add_argument("--ops", type=int, default=10000, help="number of operations (default 10000)")
    parser.add_argument("--size", type=parse_size, default=256 << 10,
                        help="maximum file size, k/m/g suffixes (default 256k)")
    parser.add_argument("--maxlen", type=parse_size, default=None,
                        help="maximum length of one operation (default: a quarter of --size, at least 64k)")
    parser.add_argument("--check-every", type=int, default=1,
                        help="compare the whole file with the model every N operations (default 1; 0: only at "
                             "remounts and the end; the range an operation touched is always read back)")
    parser.add_argument("--remount-cmd", default=None,
                        help="shell command run with the file closed every --remount-every operations and at the "
                             "end (e.g. unmount, fsck and mount again); the file is then reopened and compared")
    parser.add_argument("--remount-every", type=int, default=1000, help="operations between remounts (default 1000)")
    parser.add_argument("--allow-unsupported", action="store_true",
                        help="an operation failing with EOPNOTSUPP/ENOSYS is reported and then skipped, "
                             "without failing the run")
    parser.add_argument("--expect-holes", type=parse_size, default=0, metavar="BYTES",
                        help="also require SEEK_DATA/SEEK_HOLE to report as holes the BYTES-aligned blocks that "
                             "were never written or were punched or truncated away (e.g. 4k on ext4, 64k on "
                             "hammer2); default: off (whole-file data is accepted)")
    parser.add_argument("--disable", default="", help="comma-separated operations not to run")
    parser.add_argument("--log-tail", type=int, default=40, help="operations shown on failure (default 40)")
    parser.add_argument("--logfile", default=None, help="write the whole operation log to this file")
    parser.add_argument("--summary-json", default=None, help="write a summary of the run as JSON to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every operation")
    args = parser.parse_args()

    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "little")
    if args.maxlen is None:
        args.maxlen = max(args.size // 4, min(args.size, 64 << 10))
    if args.ops < 0 or args.size < 1 or args.maxlen < 1 or args.check_every < 0 or args.remount_every < 0:
        parser.error("--ops, --check-every and --remount-every must not be negative; --size and --maxlen positive")
    valid = {n for n, _ in OPS} | {"mmap", "seek"}
    args.disable = {d.strip() for d in args.disable.split(",") if d.strip()}
    bad = args.disable - valid
    if bad:
        parser.error(f"unknown operation(s) for --disable: {', '.join(sorted(bad))}")
    parent = os.path.dirname(os.path.abspath(args.file))
    if not os.path.isdir(parent):
        print(f"fsx: {parent}: no such directory", file=sys.stderr)
        return 2

    print(f"fsx: seed {args.seed}, {args.ops} ops, file {args.file}, max size {args.size:#x}, "
          f"max op length {args.maxlen:#x}" + (f", remount every {args.remount_every} ops" if args.remount_cmd else ""),
          flush=True)
    fsx = FSX(args)
    summary = {"seed": args.seed, "ops": args.ops, "result": "FAIL", "failure": None}

    def finish(status, failure=None):
        if fsx.fd >= 0:
            os.close(fsx.fd)
            fsx.fd = -1
        if fsx.logfile:
            fsx.logfile.close()
            fsx.logfile = None
        summary.update(result="PASS" if status == 0 else "FAIL", failure=failure, done=fsx.opnum,
                       counts=dict(fsx.counts), skipped=dict(fsx.skipped), remounts=fsx.remounts,
                       unsupported={k: v[1] for k, v in fsx.unsupported.items()})
        if args.summary_json:
            with open(args.summary_json, "w") as out:
                json.dump(summary, out, indent=1)
        return status

    try:
        try:
            elapsed = fsx.run()
        except OSError as e:
            if fsx.opnum == 0:
                print(f"fsx: cannot set up {args.file}: {e}", file=sys.stderr)
                return finish(2, f"setup: {e}")
            raise CheckFailure(f"unexpected error {errno.errorcode.get(e.errno, e.errno)} ({e.strerror}) "
                               f"at op #{fsx.opnum}")
    except CheckFailure as f:
        print(f"fsx: FAIL at op #{fsx.opnum}: {f}", flush=True)
        print(f"fsx: seed {args.seed}; replay with:\n  {replay_command(args)}")
        print(f"fsx: last {len(fsx.log)} operations:")
        for line in fsx.log:
            print("  " + line)
        return finish(1, f"op #{fsx.opnum}: {str(f).splitlines()[0]}")
    except KeyboardInterrupt:
        finish(1, "interrupted")
        raise

    done = ", ".join(f"{n} {fsx.counts[n]}" for n, _ in OPS if fsx.counts[n])
    print(f"fsx: {fsx.opnum} ops in {elapsed:.1f} s ({done}); {fsx.remounts} remounts, "
          f"{fsx.seek_walks} SEEK_DATA/SEEK_HOLE walks ({fsx.hole_bytes_reported} bytes reported as holes"
          + (f"; {fsx.seek_retries} steps asked again after a zero block turned into a hole" if fsx.seek_retries else "")
          + ")")
    summary["seconds"] = round(elapsed, 3)
    if fsx.unsupported:
        listing = "; ".join(
            f"{v[1]} (first at op #{v[0]}, "
            f"{sum(fsx.skipped[n] for n, _ in OPS if OP_CLASS.get(n, n) == k)} ops skipped)"
            for k, v in fsx.unsupported.items())
        if not args.allow_unsupported:
            print(f"fsx: FAIL: unsupported operations: {listing} (seed {args.seed}; --allow-unsupported skips them)")
            return finish(1, "unsupported operations: " + ", ".join(sorted(fsx.unsupported)))
        print(f"fsx: NOTE unsupported operations skipped (--allow-unsupported): {listing}")
    print(f"fsx: PASS (seed {args.seed})")
    return finish(0)


if __name__ == "__main__":
    sys.exit(main())
