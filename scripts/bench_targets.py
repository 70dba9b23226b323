"""Filesystems for scripts/bench and scripts/bench-scale: each makes a fresh filesystem,
mounts it at .mnt, makes the next access cold, flushes, and reports the space it uses."""
import ctypes
import os
import subprocess
import sys
import time

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def log(message):
    print("== " + message, flush=True)


def run(args, check=True, quiet=True, **kwargs):
    out = subprocess.DEVNULL if quiet else None
    return subprocess.run(args, check=check, stdout=kwargs.pop("stdout", out),
                          stderr=kwargs.pop("stderr", None), **kwargs)


def output(args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def syncfs(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs " + path)
    finally:
        os.close(fd)


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def used_bytes(path):
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def wait_mounted(path, pid=None, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if os.path.ismount(path):
            return
        if pid is not None and pid.poll() is not None:
            sys.exit("bench: the mount of %s exited (%d); see the log in the workdir" % (path, pid.returncode))
        time.sleep(0.05)
    sys.exit("bench: %s not mounted after %d s" % (path, seconds))


# --- Filesystems -------------------------------------------------------------------------

class Target:
    """A filesystem made fresh for each workload: make() mounts it at self.mnt."""
    fuse_daemon = None  # our mount's process, for its peak RSS

    def __init__(self, name, suite):
        self.name, self.suite = name, suite
        self.mnt = os.path.join(suite.workdir, "mnt", name)
        self.baseline = 0

    def make(self): raise NotImplementedError
    def destroy(self): raise NotImplementedError
    def cold(self): drop_caches()
    def flush(self): syncfs(self.mnt)
    def used(self): return used_bytes(self.mnt) - self.baseline
    def daemon_peak_rss(self): return None

    def populate(self, directory, names):
        """Empty files in a directory of the mount: the untimed setup of a workload."""
        for name in names:
            os.close(os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


class Tmpfs(Target):
    def make(self):
        os.makedirs(self.mnt, exist_ok=True)
        run(["mount", "-t", "tmpfs", "-o", "size=%dm" % self.suite.space_mib, "bench", self.mnt])
        self.baseline = used_bytes(self.mnt)

    def cold(self):
        pass  # tmpfs is memory: there is nothing colder

    def destroy(self):
        run(["umount", self.mnt], check=False)


class LoopTarget(Target):
    """ext4 or btrfs on a loop device over a sparse image in the workdir."""
    def __init__(self, name, suite, kind, options):
        super().__init__(name, suite)
        self.kind, self.options = kind, options
        self.image = os.path.join(suite.workdir, name + ".img")
        self.loop = None

    def make_lower(self, mnt):
        os.makedirs(mnt, exist_ok=True)
        if os.path.exists(self.image):
            os.unlink(self.image)
        with open(self.image, "wb") as f:
            f.truncate(self.suite.space_mib * MiB)
        self.loop = output(["losetup", "--find", "--show", self.image])
        if self.kind == "ext4":
            run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", self.loop])
        else:
            run(["mkfs.btrfs", "-q", "-f", self.loop])
        run(["mount", "-o", self.options, self.loop, mnt])

    def destroy_lower(self, mnt):
        run(["umount", mnt], check=False)
        if self.loop:
            run(["losetup", "-d", self.loop], check=False)
            self.loop = None
        if os.path.exists(self.image):
            os.unlink(self.image)

    def make(self):
        self.make_lower(self.mnt)
        self.baseline = used_bytes(self.mnt)

    def destroy(self):
        self.destroy_lower(self.mnt)


class Gocryptfs(LoopTarget):
    def __init__(self, name, suite):
        super().__init__(name, suite, "ext4", "noatime")
        self.lower = self.mnt + "-lower"
        self.cipher = os.path.join(self.lower, "cipher")
        self.passfile = os.path.join(suite.workdir, "gocryptfs.pass")

    def mount(self):
        run(["gocryptfs", "-q", "-nosyslog", "-passfile", self.passfile, self.cipher, self.mnt])
        wait_mounted(self.mnt)

    def make(self):
        self.make_lower(self.lower)
        with open(self.passfile, "w") as f:
            f.write("benchmark passphrase\n")
        os.makedirs(self.cipher)
        run(["gocryptfs", "-q", "-init", "-passfile", self.passfile, self.cipher])
        os.makedirs(self.mnt, exist_ok=True)
        self.mount()
        self.baseline = used_bytes(self.lower)

    def cold(self):
        run(["fusermount3", "-u", self.mnt])
        drop_caches()
        self.mount()

    def flush(self):
        os.sync()  # gocryptfs writes through to ext4; sync reaches ext4 below

    def used(self):
        return used_bytes(self.lower) - self.baseline

    def destroy(self):
        run(["fusermount3", "-u", self.mnt], check=False)
        time.sleep(0.2)
        self.destroy_lower(self.lower)


class ZfsFuse(Target):
    """A dataset of a pool on a sparse file; zfs-fuse's daemon is started once per suite."""
    made = 0
    def __init__(self, name, suite, properties):
        super().__init__(name, suite)
        self.properties = properties
        self.image = os.path.join(suite.workdir, name + ".zpool")
        ZfsFuse.made += 1  # a pool name per filesystem made: an export can linger
        self.pool = "bench%d%s%d" % (os.getpid(), name.replace("-", ""), ZfsFuse.made)
        self.dataset = self.pool + "/fs"

    def make(self):
        self.suite.start_zfs()
        os.makedirs(self.mnt, exist_ok=True)
        with open(self.image, "wb") as f:
            f.truncate((self.suite.space_mib + 512) * MiB)
        run(["zpool", "create", "-f", "-o", "cachefile=none", "-m", "none", "-O", "atime=off",
             self.pool, self.image])
        args = ["zfs", "create", "-o", "mountpoint=" + self.mnt]
        for p in self.properties:
            args += ["-o", p]
        run(args + [self.dataset])
        self.baseline = self.used_raw()

    def used_raw(self):
        return int(output(["zfs", "get", "-Hp", "-o", "value", "used", self.dataset]))

    def used(self):
        return self.used_raw() - self.baseline

    def cold(self):
        run(["zpool", "export", self.pool])
        drop_caches()
        run(["zpool", "import", "-o", "cachefile=none", "-d", self.suite.workdir, self.pool])
        wait_mounted(self.mnt)

    def flush(self):
        # syncfs does not reach zfs-fuse's daemon; a property change waits for a txg sync.
        run(["zfs", "set", "bench:sync=%d" % time.time_ns(), self.dataset])

    def destroy(self):
        # zfs-fuse may still hold the dataset for a moment after the last close ("pool is
        # busy"): retry, then unmount it by force.
        for attempt in range(10):
            if attempt == 5:
                run(["zfs", "umount", "-f", self.dataset], check=False)
            if subprocess.run(["zpool", "destroy", "-f", self.pool], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        if os.path.exists(self.image):
            os.unlink(self.image)


class PassthroughLL(Target):
    """libfuse's own low-level example passthrough_ll (C, libfuse 3) over a tmpfs directory:
    the practical ceiling for a FUSE filesystem's metadata (issue 24). Built from the
    examples libfuse3-dev installs, with its default options (cache=auto, 1 s timeouts,
    multi-threaded loop)."""
    EXAMPLES = "/usr/share/doc/libfuse3-dev/examples"

    def __init__(self, name, suite, options=()):
        super().__init__(name, suite)
        self.lower = self.mnt + "-lower"
        self.binary = os.path.join(suite.workdir, "passthrough_ll")
        self.daemon = None
        self.options = list(options)

    def build(self):
        if os.path.exists(self.binary):
            return
        source = os.path.join(self.EXAMPLES, "passthrough_ll.c")
        if not os.path.exists(source):
            raise RuntimeError("passthrough_ll.c not found in %s (libfuse3-dev)" % self.EXAMPLES)
        flags = output(["pkg-config", "fuse3", "--cflags", "--libs"]).split()
        run(["gcc", "-O2", "-D_FILE_OFFSET_BITS=64", "-I", self.EXAMPLES, source, "-o", self.binary] + flags)

    def mount(self):
        def raise_open_files():
            import resource
            # An O_PATH descriptor per inode the kernel knows: as many as the hard limit.
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.daemon = subprocess.Popen([self.binary, "-f", "-o", ",".join(["source=" + self.lower] + self.options), self.mnt],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, preexec_fn=raise_open_files)
        wait_mounted(self.mnt, self.daemon)

    def unmount(self):
        if self.daemon:
            run(["fusermount3", "-u", self.mnt], check=False)
            self.daemon.wait(timeout=60)
            self.daemon = None

    def make(self):
        self.build()
        os.makedirs(self.lower, exist_ok=True)
        os.makedirs(self.mnt, exist_ok=True)
        run(["mount", "-t", "tmpfs", "-o", "size=%dm" % self.suite.space_mib, "bench", self.lower])
        self.mount()
        self.baseline = used_bytes(self.mnt)

    def populate(self, directory, names):
        # In the tmpfs below: through the mount, every file made would keep one of the
        # daemon's descriptors until the kernel forgets it, past ulimit -n here (20000).
        lower = os.path.join(self.lower, os.path.relpath(directory, self.mnt))
        for name in names:
            os.close(os.open(os.path.join(lower, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))

    def cold(self):
        # tmpfs below stays in memory; the kernel's FUSE caches and the daemon's inodes go.
        self.unmount()
        drop_caches()
        self.mount()

    def destroy(self):
        self.unmount()
        run(["umount", self.lower], check=False)


class Hammer2(Target):
    def __init__(self, name, suite, comp=None, newfs_args=(), encrypted=False, bin_dir=None, mount_options=()):
        super().__init__(name, suite)
        self.mount_options = list(mount_options)
        self.bin_dir = bin_dir
        self.comp, self.newfs_args, self.encrypted = comp, list(newfs_args), encrypted
        self.image = os.path.join(suite.workdir, name + ".h2img")
        self.keyfile = os.path.join(suite.workdir, "h2.key")
        self.daemon = None
        self.peak_rss = 0

    def mount(self):
        options = ["cache=%d" % self.suite.cache_mib] if self.suite.cache_mib else []
        options += self.mount_options
        if self.encrypted:
            options.append("keyfile=" + self.keyfile)
        args = [self.bin("mount_hammer2"), "-f"] + (["-o", ",".join(options)] if options else [])
        logfile = open(os.path.join(self.suite.workdir, "mount_hammer2.log"), "a")
        self.daemon = subprocess.Popen(args + [self.image + "@DATA", self.mnt], stdin=subprocess.DEVNULL,
                                       stdout=logfile, stderr=logfile)
        logfile.close()
        wait_mounted(self.mnt, self.daemon)

    def bin(self, name):
        return os.path.join(self.bin_dir, name) if self.bin_dir else self.suite.bin(name)

    def unmount(self):
        if not self.daemon:
            return
        self.note_rss()
        run(["fusermount3", "-u", self.mnt], check=False)
        try:
            self.daemon.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()
            sys.exit("bench: mount_hammer2 did not exit within 120 s of its unmount")
        if self.daemon.returncode != 0:
            sys.exit("bench: mount_hammer2 exited with %d" % self.daemon.returncode)
        self.daemon = None

    def note_rss(self):
        try:
            with open("/proc/%d/status" % self.daemon.pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        self.peak_rss = max(self.peak_rss, int(line.split()[1]) * KiB)
        except OSError:
            pass

    def make(self):
        os.makedirs(self.mnt, exist_ok=True)
        if os.path.exists(self.image):
            os.unlink(self.image)
        args = [self.bin("newfs_hammer2"), "-s", "%dm" % self.suite.space_mib, "-L", "DATA"]
        if self.encrypted:
            with open(self.keyfile, "wb") as f:
                f.write(os.urandom(64))
            args += ["-k", self.keyfile]
        run(args + self.newfs_args + [self.image])
        self.peak_rss = 0
        self.mount()
        if self.comp:
            run([self.bin("hammer2"), "setcomp", self.comp, self.mnt])
        self.baseline = used_bytes(self.mnt)

    def cold(self):
        self.unmount()
        drop_caches()
        self.mount()

    def flush(self):
        # An fsync would only append to the intent log; builds before it (h2-base) have no
        # hammer2 flush, and their fsync flushes.
        if subprocess.run([self.bin("hammer2"), "flush", self.mnt], capture_output=True).returncode != 0:
            fsync_path(self.mnt)

    def daemon_peak_rss(self):
        return self.peak_rss or None

    def destroy(self):
        self.unmount()
        if os.path.exists(self.image):
            os.unlink(self.image)


def make_target(name, suite):
    if name == "tmpfs":
        return Tmpfs(name, suite)
    if name == "ext4":
        return LoopTarget(name, suite, "ext4", "noatime")
    if name.startswith("btrfs-"):
        return LoopTarget(name, suite, "btrfs", "noatime,compress=" + name.split("-")[1])
    if name == "passthrough":
        return PassthroughLL(name, suite)
    if name == "passthrough-dp":
        # The kernel checks permissions from cached attributes, as on our mount: after a
        # change to a directory it asks for them again (a GETATTR passthrough_ll avoids).
        return PassthroughLL(name, suite, ["default_permissions"])
    if name == "zfs-lzjb":
        return ZfsFuse(name, suite, ["compression=lzjb"])
    if name == "zfs-copies2":
        return ZfsFuse(name, suite, ["compression=lzjb", "copies=2"])
    if name == "gocryptfs":
        return Gocryptfs(name, suite)
    if name == "h2-none":
        return Hammer2(name, suite, comp="none")
    if name == "h2-lz4":
        return Hammer2(name, suite)
    if name == "h2-base":
        # An earlier build (--baseline-bin), LZ4: old and new figures side by side.
        if not suite.args.baseline_bin:
            raise ValueError("h2-base needs --baseline-bin DIR")
        return Hammer2(name, suite, bin_dir=suite.args.baseline_bin)
    if name == "h2-devfuse":
        return Hammer2(name, suite, mount_options=["nouring"])
    if name == "h2-nowb":
        return Hammer2(name, suite, mount_options=["nowriteback"])
    if name == "h2-zlib":
        return Hammer2(name, suite, comp="zlib:6")
    if name == "h2-enc":
        return Hammer2(name, suite, encrypted=True)
    if name == "h2-copies2":
        return Hammer2(name, suite, newfs_args=["-c", "2"])
    raise ValueError(name)
