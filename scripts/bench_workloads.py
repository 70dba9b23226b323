"""Workloads of scripts/bench: each takes a freshly made Target and the Suite and returns
{metric: value}. They run in the suite's process; fio does the block I/O."""
import json
import os
import random
import subprocess
import tarfile
import threading
import time

MiB = 1 << 20


def fio(suite, *jobs, directory=None, cwd=None):
    """Runs fio with the given job option lists (one list per job, the first also carries
    the global options); returns (parsed JSON, wall seconds)."""
    args = ["fio", "--output-format=json", "--thread", "--ioengine=psync"]
    for index, job in enumerate(jobs):
        args += ["--name=job%d" % index] + ["--" + option for option in job]
    start = time.perf_counter()
    done = subprocess.run(args, check=True, capture_output=True, text=True, cwd=cwd,
                          timeout=suite.seconds_left())
    wall = time.perf_counter() - start
    text = done.stdout
    return json.loads(text[text.index("{"):]), wall


def total_ios(report):
    return sum(job["read"]["total_ios"] + job["write"]["total_ios"] for job in report["jobs"])


def total_bytes(report):
    return sum(job["read"]["io_bytes"] + job["write"]["io_bytes"] for job in report["jobs"])


def lay_out(suite, target, path, mib):
    """An incompressible file of mib MiB, flushed: the input of the read and overwrite rows."""
    fio(suite, ["filename=" + path, "rw=write", "bs=1M", "size=%dM" % mib, "refill_buffers=1", "end_fsync=1"])
    target.flush()


def seq(suite, target, compressible=False):
    path = os.path.join(target.mnt, "seq.bin")
    mib = suite.seq_mib
    job = ["filename=" + path, "rw=write", "bs=1M", "size=%dM" % mib, "end_fsync=1", "refill_buffers=1"]
    if compressible:
        job += ["buffer_compress_percentage=50", "buffer_compress_chunk=4096"]
    _, wall = fio(suite, job)
    write = mib * MiB / 1e6 / wall
    if compressible:
        return {"seqcomp_write": write}
    target.cold()
    report, wall = fio(suite, ["filename=" + path, "rw=read", "bs=1M", "size=%dM" % mib])
    if total_bytes(report) != mib * MiB:
        raise RuntimeError("seq read on %s read %d bytes" % (target.name, total_bytes(report)))
    return {"seq_write": write, "seq_read": mib * MiB / 1e6 / wall}


def seqcomp(suite, target):
    return seq(suite, target, compressible=True)


def random_io(suite, target, kind, direct=False):
    path = os.path.join(target.mnt, "rand.bin")
    mib = 1024 if kind == "randread" else 256
    lay_out(suite, target, path, mib)
    results = {}
    for depth in (1, 16):
        target.cold()
        job = ["filename=" + path, "rw=" + kind, "bs=4k", "size=%dM" % mib, "time_based=1",
               "runtime=%d" % suite.rand_seconds, "numjobs=%d" % depth, "group_reporting=1",
               "randrepeat=0"]
        if kind == "randwrite":
            job += ["end_fsync=1", "refill_buffers=1"]
        if direct:
            job += ["direct=1"]
        report, wall = fio(suite, job)
        results["%s%s_qd%d" % (kind, "_direct" if direct else "", depth)] = total_ios(report) / wall
    return results


def randread(suite, target):
    return random_io(suite, target, "randread")


def randwrite(suite, target):
    return random_io(suite, target, "randwrite")


def randwrite_direct(suite, target):
    return random_io(suite, target, "randwrite", direct=True)


def parcreate(suite, target):
    """--files empty files created (+ flush) by one thread in one directory, then as many
    by four threads, each in its own directory; files/s."""
    results = {}
    for threads in (1, 4):
        base = os.path.join(target.mnt, "parcreate%d" % threads)
        dirs = [os.path.join(base, "d%d" % t) for t in range(threads)]
        for d in dirs:
            os.makedirs(d)
        target.flush()
        per = suite.files // threads
        errors = []

        def create(d):
            try:
                for i in range(per):
                    os.close(os.open(os.path.join(d, "f%06d" % i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            except OSError as error:
                errors.append(error)

        start = time.perf_counter()
        workers = [threading.Thread(target=create, args=(d,)) for d in dirs]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        target.flush()
        if errors:
            raise RuntimeError("parallel create on %s: %s" % (target.name, errors[0]))
        results["parcreate_%d" % threads] = per * threads / (time.perf_counter() - start)
    return results


def files(suite, target):
    directory = os.path.join(target.mnt, "files")
    os.mkdir(directory)
    count = suite.files
    payload = random.Random(1).randbytes(100)
    names = [os.path.join(directory, "f%06d" % i) for i in range(count)]
    start = time.perf_counter()
    for name in names:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, payload)
        os.close(fd)
    target.flush()
    create = count / (time.perf_counter() - start)
    target.cold()
    start = time.perf_counter()
    for name in names:
        if os.stat(name).st_size != 100:
            raise RuntimeError("%s on %s is not 100 bytes" % (name, target.name))
    stat = count / (time.perf_counter() - start)
    start = time.perf_counter()
    for name in names:
        os.unlink(name)
    target.flush()
    unlink = count / (time.perf_counter() - start)
    return {"files_create": create, "files_stat": stat, "files_unlink": unlink}


def metadata(suite, target):
    """One directory of --files entries, each metadata operation over all of them in turn,
    timed without the flushes between phases (which are untimed); then a listing of a
    directory of --readdir-entries entries, cold and warm. Operations/s."""
    directory = os.path.join(target.mnt, "meta")
    os.mkdir(directory)
    count = suite.files
    files = [os.path.join(directory, "f%06d" % i) for i in range(count)]
    renamed = [os.path.join(directory, "g%06d" % i) for i in range(count)]
    links = [os.path.join(directory, "h%06d" % i) for i in range(count)]
    symlinks = [os.path.join(directory, "s%06d" % i) for i in range(count)]
    dirs = [os.path.join(directory, "d%06d" % i) for i in range(count)]
    results = {}

    def timed(metric, operation, items):
        start = time.perf_counter()
        for item in items:
            operation(item)
        results[metric] = len(items) / (time.perf_counter() - start)

    def create(name):
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))

    def stat(name):
        if os.stat(name).st_size != 0:
            raise RuntimeError("%s on %s is not empty" % (name, target.name))

    timed("meta_create", create, files)
    timed("meta_stat_warm", stat, files)
    target.flush()
    timed("meta_chmod", lambda name: os.chmod(name, 0o600), files)
    timed("meta_utimens", lambda name: os.utime(name, (1e9, 1e9)), files)
    target.flush()
    target.cold()
    timed("meta_stat_cold", stat, files)
    timed("meta_rename", lambda i: os.rename(files[i], renamed[i]), range(count))
    timed("meta_link", lambda i: os.link(renamed[i], links[i]), range(count))
    for name in links:
        os.unlink(name)
    target.flush()
    timed("meta_unlink", os.unlink, renamed)
    # After the unlinks: passthrough_ll keeps a descriptor per live inode, and ulimit -n
    # here stops at 20000.
    timed("meta_symlink", lambda i: os.symlink("g%06d" % i, symlinks[i]), range(count))
    for name in symlinks:
        os.unlink(name)
    timed("meta_mkdir", os.mkdir, dirs)
    target.flush()
    timed("meta_rmdir", os.rmdir, dirs)
    if os.listdir(directory):
        raise RuntimeError("meta on %s is not empty after the removals" % target.name)
    listing = os.path.join(target.mnt, "listing")
    os.mkdir(listing)
    entries = suite.readdir_entries
    target.populate(listing, ["entry-%07d" % i for i in range(entries)])
    target.flush()
    target.cold()
    for metric in ("meta_readdir_cold", "meta_readdir_warm"):
        start = time.perf_counter()
        with os.scandir(listing) as iterator:
            seen = sum(1 for _ in iterator)
        results[metric] = seen / (time.perf_counter() - start)
        if seen != entries:
            raise RuntimeError("readdir on %s listed %d of %d entries" % (target.name, seen, entries))
    return results


def xattr(suite, target):
    """setxattr of a 32-byte user.* value on each of --files/4 files (+ flush), then getxattr
    of each after the caches are dropped and again warm; calls per second."""
    directory = os.path.join(target.mnt, "xattr")
    os.mkdir(directory)
    count = max(1000, suite.files // 4)
    names = [os.path.join(directory, "f%06d" % i) for i in range(count)]
    for name in names:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    target.flush()
    values = [("value of file %06d" % i).encode().ljust(32, b".") for i in range(count)]
    start = time.perf_counter()
    for name, value in zip(names, values):
        os.setxattr(name, "user.bench", value)
    target.flush()
    set_rate = count / (time.perf_counter() - start)
    target.cold()
    rates = []
    for _ in ("cold", "warm"):
        start = time.perf_counter()
        for name, value in zip(names, values):
            if os.getxattr(name, "user.bench") != value:
                raise RuntimeError("user.bench of %s on %s is wrong" % (name, target.name))
        rates.append(count / (time.perf_counter() - start))
    return {"xattr_set": set_rate, "xattr_get_cold": rates[0], "xattr_get_warm": rates[1]}


def latency(suite, target):
    """A create + stat pair every 10 ms while --stream-gib GiB of incompressible data are
    written sequentially (1 MiB writes) into the same filesystem; the pairs' latency."""
    stream_path = os.path.join(target.mnt, "stream.bin")
    probes = os.path.join(target.mnt, "probes")
    os.mkdir(probes)
    total = suite.stream_gib << 30
    chunk = os.urandom(1 << 20)
    done = threading.Event()
    failure = []

    def stream():
        try:
            fd = os.open(stream_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            written = 0
            while written < total:
                # Each MiB differs (its first bytes) so that nothing dedups or compresses.
                os.write(fd, written.to_bytes(8, "little") + chunk[8:])
                written += len(chunk)
            os.fsync(fd)
            os.close(fd)
        except OSError as error:
            failure.append(error)
        finally:
            done.set()

    writer = threading.Thread(target=stream)
    writer.start()
    samples = []
    i = 0
    while not done.is_set():
        start = time.perf_counter()
        name = os.path.join(probes, "p%06d" % i)
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        os.stat(name)
        samples.append((time.perf_counter() - start) * 1000)
        i += 1
        time.sleep(max(0, 0.010 - (time.perf_counter() - start)))
    writer.join()
    if failure:
        raise RuntimeError("the stream on %s failed: %s" % (target.name, failure[0]))
    samples.sort()
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
    return {"latency_p50": pick(0.50), "latency_p99": pick(0.99), "latency_max": samples[-1],
            "latency_over100": float(sum(1 for s in samples if s > 100))}


def corpus(suite, target):
    tar, content = suite.corpus()
    start = time.perf_counter()
    subprocess.run(["tar", "-xf", tar, "-C", target.mnt], check=True, timeout=suite.seconds_left())
    target.flush()
    seconds = time.perf_counter() - start
    return {"corpus_write": content / 1e6 / seconds, "corpus_space": target.used() / content}


def checkout(suite, target):
    source, file_count = suite.checkout_source()
    repo = os.path.join(target.mnt, "repo")
    subprocess.run(["git", "clone", "-q", "--no-checkout", "--no-hardlinks", source, repo], check=True)
    target.flush()
    target.cold()
    start = time.perf_counter()
    subprocess.run(["git", "-C", repo, "checkout", "-q", "-f", "HEAD", "--", "."], check=True,
                   timeout=suite.seconds_left())
    target.flush()
    seconds = time.perf_counter() - start
    status = subprocess.run(["git", "-C", repo, "status", "--porcelain"], check=True, capture_output=True,
                            text=True).stdout
    if status:
        raise RuntimeError("checkout on %s differs from the commit: %s" % (target.name, status[:200]))
    return {"checkout": file_count / seconds}


def mixed(suite, target):
    reads = os.path.join(target.mnt, "mixed-read.bin")
    randoms = os.path.join(target.mnt, "mixed-random.bin")
    overwrites = os.path.join(target.mnt, "mixed-overwrite.bin")
    for path, mib in ((reads, 512), (randoms, 256), (overwrites, 128)):
        lay_out(suite, target, path, mib)
    target.cold()
    common = ["time_based=1", "runtime=%d" % suite.rand_seconds]
    report, wall = fio(suite,
                       ["filename=" + reads, "rw=read", "bs=1M", "size=512M"] + common,
                       ["filename=" + randoms, "rw=randread", "bs=4k", "size=256M"] + common,
                       ["filename=" + os.path.join(target.mnt, "mixed-new.bin"), "rw=write", "bs=1M",
                        "size=4G", "refill_buffers=1", "end_fsync=1"] + common,
                       ["filename=" + overwrites, "rw=randwrite", "bs=4k", "size=128M", "refill_buffers=1",
                        "end_fsync=1"] + common)
    return {"mixed": total_bytes(report) / 1e6 / wall}


def fsync(suite, target):
    """What databases do (issue 23): 4 KiB pwrite + fsync at random places of a 1 MiB file for
    --rand-seconds (rate, p50, p99, and KiB of space allocated per fsync once the volume
    has flushed), sqlite inserts in 1-row transactions with synchronous=FULL in WAL and
    rollback-journal mode, and fio randwrite 4 KiB with fsync=1."""
    import sqlite3
    results = {}
    path = os.path.join(target.mnt, "fsync.bin")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"\0" * MiB, 0)
        os.fsync(fd)
        target.flush()
        before = target.used()
        block = os.urandom(4096)
        latencies = []
        end = time.perf_counter() + suite.rand_seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            os.pwrite(fd, block, random.randrange(256) * 4096)
            os.fsync(fd)
            latencies.append(time.perf_counter() - start)
    finally:
        os.close(fd)
    target.flush()
    latencies.sort()
    results["fsync_rate"] = len(latencies) / sum(latencies)
    results["fsync_p50"] = latencies[len(latencies) // 2] * 1e3
    results["fsync_p99"] = latencies[int(len(latencies) * 0.99)] * 1e3
    results["fsync_alloc"] = max(0, target.used() - before) / 1024 / len(latencies)
    for mode in ("wal", "delete"):
        database = os.path.join(target.mnt, "bench-%s.db" % mode)
        connection = sqlite3.connect(database, isolation_level=None)
        connection.execute("PRAGMA journal_mode=%s" % mode)
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, value BLOB)")
        count = 0
        start = time.perf_counter()
        end = start + suite.rand_seconds
        while time.perf_counter() < end:
            connection.execute("BEGIN")
            connection.execute("INSERT INTO t (value) VALUES (?)", (os.urandom(100),))
            connection.execute("COMMIT")
            count += 1
        wall = time.perf_counter() - start
        rows = connection.execute("SELECT count(*) FROM t").fetchone()[0]
        connection.close()
        if rows != count:
            raise RuntimeError("sqlite on %s: %d rows after %d commits" % (target.name, rows, count))
        results["sqlite_" + mode] = count / wall
    report, wall = fio(suite, ["filename=" + os.path.join(target.mnt, "fio-fsync.bin"), "rw=randwrite", "bs=4k",
                               "size=64M", "fsync=1", "time_based=1", "runtime=%d" % suite.rand_seconds,
                               "refill_buffers=1", "randrepeat=0"])
    results["fio_fsync"] = total_ios(report) / wall
    return results


WORKLOADS = {"metadata": metadata, "fsync": fsync, "seq": seq, "seqcomp": seqcomp, "randread": randread, "randwrite": randwrite,
             "randwrite-direct": randwrite_direct, "parcreate": parcreate,
             "files": files, "xattr": xattr, "latency": latency, "corpus": corpus, "checkout": checkout, "mixed": mixed}


# --- Inputs built once per suite ----------------------------------------------------------

def candidates(root):
    """Regular files and symlinks under root, each inode once, sorted by path."""
    seen, found = set(), []
    for directory, dirs, names in os.walk(root):
        dirs.sort()
        for entry in sorted(names):
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


class _Bytes:
    def __init__(self, data):
        self.data, self.offset = memoryview(data), 0

    def read(self, size=-1):
        end = len(self.data) if size < 0 else self.offset + size
        chunk = self.data[self.offset:end]
        self.offset += len(chunk)
        return bytes(chunk)


def build_corpus(out, mib):
    """About mib MiB of file content: 40% sampled from /usr/share (documentation, text,
    locale and data files), 45% from /usr/lib (shared libraries, binaries, scripts), 15%
    random bytes in files of 64 KiB to 8 MiB. Seeded: the same machine gives the same tar.
    Returns the content bytes."""
    target = mib * MiB
    rng = random.Random(42)
    chosen = []
    for root, share in (("/usr/share", 0.40), ("/usr/lib", 0.45)):
        pool = candidates(root)
        rng.shuffle(pool)
        quota, total = int(target * share), 0
        for path, size in pool:
            if total >= quota:
                break
            if total + size > quota + MiB:
                continue
            chosen.append(path)
            total += size
    chosen.sort()
    content = 0
    with tarfile.open(out + ".tmp", "w", format=tarfile.GNU_FORMAT) as tar:
        for path in chosen:
            try:
                info = tar.gettarinfo(path, arcname=path.lstrip("/"))
                if info.issym():
                    tar.addfile(info)
                else:
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                    content += info.size
            except OSError:
                continue
        index = 0
        while content < target:
            size = min(rng.randrange(64 << 10, 8 << 20), target - content)
            info = tarfile.TarInfo("random/r%04d.bin" % index)
            info.size, info.mode, info.mtime = size, 0o644, 1700000000
            tar.addfile(info, _Bytes(rng.randbytes(size)))
            content += size
            index += 1
    os.rename(out + ".tmp", out)
    return content


def build_checkout_source(path, tree="/usr/include"):
    """A git repository with one commit of a copy of tree (thousands of small source files).
    Returns the number of files in it."""
    subprocess.run(["rm", "-rf", path], check=True)
    os.makedirs(path)
    subprocess.run(["cp", "-r", tree, os.path.join(path, "include")], check=True)
    git = ["git", "-C", path, "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "tree"], check=True)
    return int(subprocess.run(git + ["ls-files"], check=True, capture_output=True, text=True)
               .stdout.count("\n"))
