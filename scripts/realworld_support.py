"""scripts/realworld: the helpers, the filesystems (a HAMMER2 volume, ext4 on a loop
device, tmpfs) and the bookkeeping a workload run uses."""

import collections
import hashlib
import os
import re
import shlex
import signal
import stat
import subprocess
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FSX = os.path.join(REPO, "scripts", "fsx.py")
MARKER = ".hammer2-realworld"
WORKLOADS = ["git", "sqlite", "rsync", "xattrs", "tar", "fsx", "dirs"]
TOOLS = ["newfs_hammer2", "mount_hammer2", "fsck_hammer2", "hammer2"]


class SetupError(Exception):
    """The run cannot go on (missing tool, cannot make a filesystem): exit 2."""


class Abort(Exception):
    """A workload cannot go on (its failure is already recorded)."""


def say(message=""):
    print(message, flush=True)


def tail(text, lines=20):
    text = (text or "").rstrip("\n").splitlines()
    return "\n".join("    " + line for line in text[-lines:])


def run(args, cwd=None, env=None, check=False, timeout=None, shell=False, input=None):
    """Runs a command, capturing its output (text)."""
    return subprocess.run(args, cwd=cwd, env=env, shell=shell, input=input, timeout=timeout, text=True,
                          errors="replace", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=None if input is not None else subprocess.DEVNULL, check=check)


def mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == path:
                return True
    return False


def mounts_under(directory):
    directory = os.path.realpath(directory)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == directory or point.startswith(directory + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def warm(paths):
    """Reads trees once so that neither filesystem pays for cold source files."""
    for top in paths:
        if os.path.isfile(top):
            with open(top, "rb") as f:
                while f.read(1 << 20):
                    pass
            continue
        for dirpath, _, files in os.walk(top):
            for name in files:
                p = os.path.join(dirpath, name)
                try:
                    if os.path.isfile(p) and not os.path.islink(p):
                        with open(p, "rb") as f:
                            while f.read(1 << 20):
                                pass
                except OSError:
                    pass


def manifest(root, skip=(), hashes=True):
    """path -> (type, mode, size, nlink, content hash or link target, mtime_ns) of a tree."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirs[:] = sorted(d for d in dirs if os.path.normpath(os.path.join(rel_dir, d)) not in skip)
        for name in sorted(dirs) + sorted(files):
            p = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel in skip:
                continue
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                kind, extra = "l", os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                kind, extra = "d", ""
            elif stat.S_ISREG(st.st_mode):
                kind = "f"
                extra = ""
                if hashes:
                    h = hashlib.sha256()
                    with open(p, "rb") as f:
                        while True:
                            chunk = f.read(1 << 20)
                            if not chunk:
                                break
                            h.update(chunk)
                    extra = h.hexdigest()
            else:
                kind, extra = "o", ""
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_size if kind == "f" else 0,
                        st.st_nlink if kind == "f" else 0, extra, st.st_mtime_ns)
    return out


def compare_manifests(a, b, label_a, label_b, mtimes_for=None, limit=8):
    """Differences between two manifests; mtimes compared only for paths in mtimes_for."""
    problems = []
    for p in sorted(set(a) - set(b))[:limit]:
        problems.append(f"{p}: only on {label_a}")
    for p in sorted(set(b) - set(a))[:limit]:
        problems.append(f"{p}: only on {label_b}")
    fields = ("type", "mode", "size", "link count", "content/target", "mtime")
    for p in sorted(set(a) & set(b)):
        x, y = a[p], b[p]
        for i, field in enumerate(fields):
            if i == 5 and (mtimes_for is None or p not in mtimes_for):
                continue
            if x[i] != y[i]:
                vx, vy = x[i], y[i]
                if field == "mode":
                    vx, vy = oct(vx), oct(vy)
                if field == "mtime":
                    vx, vy = f"{vx / 1e9:.9f}", f"{vy / 1e9:.9f}"
                problems.append(f"{p}: {field} {vx} on {label_a}, {vy} on {label_b}")
        if len(problems) >= 3 * limit:
            break
    return problems


# --- Filesystems -------------------------------------------------------------------------

class Target:
    """A filesystem made fresh for one workload, mounted at self.mnt."""
    kind = "?"
    can_remount = True

    def __init__(self, rw, workload):
        self.rw = rw
        self.wl = workload
        self.dir = os.path.join(rw.workdir, workload.name, self.kind)
        self.mnt = os.path.join(self.dir, "mnt")
        os.makedirs(self.mnt, exist_ok=True)
        rw.live.append(self)

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def flush(self):
        fsync_path(self.mnt)

    def release_kernel_mount(self):
        """Unmounts a reference filesystem (lazily if it is busy) and forgets it."""
        if mounted(self.mnt):
            p = run(["umount", self.mnt])
            if p.returncode != 0:
                run(["umount", "-l", self.mnt])
        if self in self.rw.live:
            self.rw.live.remove(self)


class Hammer2(Target):
    kind = "hammer2"

    def __init__(self, rw, workload):
        super().__init__(rw, workload)
        self.image = os.path.join(self.dir, "hammer2.img")
        self.source = self.image + "@DATA"
        self.mount_log = os.path.join(rw.logdir, f"{workload.name}-mount_hammer2.log")
        self.fsck_log = os.path.join(rw.logdir, f"{workload.name}-fsck_hammer2.log")
        self.proc = None
        self.last_fsck = None
        self.killed_pids = set()
        self.remount_script = os.path.join(self.dir, "remount.sh")

    def tool(self, name):
        return os.path.join(self.rw.bindir, name)

    def flush(self):
        # An fsync only appends to the intent log; hammer2 flush writes the tree now.
        p = run([self.tool("hammer2"), "flush", self.mnt])
        if p.returncode != 0:
            raise RuntimeError(f"hammer2 flush {self.mnt} failed: {p.stderr.strip()}")

    def create(self):
        if os.path.exists(self.image):
            os.unlink(self.image)
        p = run([self.tool("newfs_hammer2"), "-s", "4g", self.image])
        if p.returncode != 0:
            raise SetupError(f"newfs_hammer2 -s 4g {self.image} failed ({p.returncode}):\n{tail(p.stdout + p.stderr)}")
        self.write_remount_script()
        self.mount()

    def mount(self):
        with open(self.mount_log, "a") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} mount_hammer2 -f {self.source} {self.mnt}\n")
            log.flush()
            self.proc = subprocess.Popen([self.tool("mount_hammer2"), "-f", self.source, self.mnt],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while not mounted(self.mnt):
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                self.wl.fail(f"mount_hammer2 {self.source} exited with status {rc} before mounting:\n"
                             f"{self.log_tail()}")
                raise Abort()
            if time.monotonic() > deadline:
                self.wl.fail(f"{self.mnt} not mounted 60 s after starting mount_hammer2")
                raise Abort()
            time.sleep(0.02)

    def daemon_pids(self):
        """Pids of mount_hammer2 processes serving this image (ours or started by a script)."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and os.path.basename(argv[0]) == b"mount_hammer2" and self.source.encode() in argv:
                pids.append(int(entry))
        return pids

    def log_tail(self, lines=15):
        try:
            with open(self.mount_log, errors="replace") as f:
                return tail(f.read(), lines)
        except OSError:
            return "    (no log)"

    def unmount(self, lazy=False):
        """Unmounts and waits for the daemon's final flush (it holds the image lock until done)."""
        if mounted(self.mnt):
            for attempt in range(10):
                p = run(["fusermount3", "-uz" if lazy else "-u", self.mnt])
                if p.returncode == 0 or not mounted(self.mnt):
                    break
                if attempt == 9:
                    users = run(["fuser", "-vm", self.mnt])
                    self.wl.fail(f"fusermount3 -u {self.mnt} failed: {p.stderr.strip()}; unmounting lazily "
                                 f"(users: {' '.join((users.stdout + users.stderr).split())[:300]})")
                    run(["fusermount3", "-uz", self.mnt])
                time.sleep(0.5)
        if self.proc is not None:
            try:
                rc = self.proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                self.wl.fail(f"mount_hammer2 (pid {self.proc.pid}) still running 180 s after the unmount; killing it")
                self.proc.kill()
                rc = self.proc.wait()
            if rc != 0 and self.proc.pid not in self.killed_pids:
                self.wl.fail(f"mount_hammer2 (pid {self.proc.pid}) exited with status {rc}:\n{self.log_tail()}")
            self.proc = None
        p = run(["flock", "-x", "-w", "60", self.image, "true"])
        if p.returncode != 0:
            self.wl.fail(f"the image lock of {self.image} was not released within 60 s of the unmount "
                         f"(daemons: {self.daemon_pids()})")

    def fsck(self):
        """fsck_hammer2 on the unmounted image; a failure is recorded. Returns seconds."""
        started = time.monotonic()
        p = run([self.tool("fsck_hammer2"), self.image])
        seconds = time.monotonic() - started
        self.last_fsck = seconds
        with open(self.fsck_log, "a") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} fsck_hammer2 {self.image}: exit {p.returncode}\n")
            log.write(p.stdout + p.stderr)
        if p.returncode != 0:
            keep = os.path.join(self.rw.logdir, f"{self.wl.name}-fsck-failed-{int(time.time())}.img")
            self.rw.keep_reason = True
            self.wl.fail(f"fsck_hammer2 {self.image} exited with status {p.returncode} (log {self.fsck_log}):\n"
                         f"{tail(p.stderr or p.stdout)}\n    (image copied to {keep})")
            run(["cp", "--sparse=always", self.image, keep])
        return seconds

    def remount(self):
        self.unmount()
        self.fsck()
        self.mount()

    def kill_daemon(self):
        """SIGKILL to the daemon, found as `pgrep -f "mount_hammer2.*IMAGE"` would."""
        pids = self.daemon_pids()
        pg = run(["pgrep", "-f", f"mount_hammer2 .*{re.escape(self.source)}"])
        if len(pids) != 1:
            self.wl.fail(f"expected one mount_hammer2 for {self.source}, found {pids} (pgrep: {pg.stdout.split()})")
            raise Abort()
        os.kill(pids[0], signal.SIGKILL)
        self.killed_pids.add(pids[0])
        return pids[0]

    def write_remount_script(self):
        q = shlex.quote
        script = f"""#!/bin/sh
# Remounts {self.source} at {self.mnt}: unmount, wait for the daemon's final flush (it holds
# the image lock until done), fsck_hammer2, mount again. Written by scripts/realworld.
fusermount3 -u {q(self.mnt)} || exit 1
flock -x -w 60 {q(self.image)} true || {{ echo "the daemon did not release {self.image} within 60 s"; exit 1; }}
echo "=== $(date +%T) fsck_hammer2 {self.image} (remount.sh)" >> {q(self.fsck_log)}
{q(self.tool('fsck_hammer2'))} {q(self.image)} >> {q(self.fsck_log)} 2>&1
rc=$?
if [ $rc -ne 0 ]; then echo "fsck_hammer2 {self.image} exited with status $rc:"; tail -n 25 {q(self.fsck_log)}; exit 1; fi
echo "=== $(date +%T) mount_hammer2 -f {self.source} {self.mnt} (remount.sh)" >> {q(self.mount_log)}
setsid -f {q(self.tool('mount_hammer2'))} -f {q(self.source)} {q(self.mnt)} < /dev/null >> {q(self.mount_log)} 2>&1
i=0
while ! mountpoint -q {q(self.mnt)}; do
    i=$((i + 1))
    if [ $i -gt 600 ]; then echo "{self.mnt} not mounted after 60 s:"; tail -n 20 {q(self.mount_log)}; exit 1; fi
    sleep 0.1
done
"""
        with open(self.remount_script, "w") as f:
            f.write(script)
        os.chmod(self.remount_script, 0o755)

    def adopt_scripted_mount(self):
        """After remount.sh ran, the daemon is not our child: reap ours and go on by the lock."""
        if self.proc is not None and self.proc.poll() is not None:
            rc = self.proc.returncode
            if rc != 0:
                self.wl.fail(f"mount_hammer2 (pid {self.proc.pid}) exited with status {rc}:\n{self.log_tail()}")
            self.proc = None

    def check_log(self):
        """Crashes and errors the daemon logged during the workload."""
        try:
            with open(self.mount_log, errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return
        bad = [l for l in lines if re.search(r"Fatal error|fatal|panic|Assertion|Segmentation|Illegal instruction|"
                                             r"stack trace|Current stack", l)]
        if bad:
            self.wl.fail("the mount's log shows a crash:\n" + "\n".join("    " + l for l in bad[:20]))
        noisy = [l for l in lines if not l.startswith("===") and "trace segment" not in l]
        if noisy:
            self.wl.note(f"mount_hammer2 logged {len(noisy)} line(s) (log {self.mount_log}), e.g.: {noisy[0][:200]}")

    def destroy(self):
        """Final unmount and fsck; the image is removed unless kept."""
        if mounted(self.mnt) or self.proc is not None or self.daemon_pids():
            self.unmount()
            self.fsck()
        self.check_log()
        self.cleanup()

    def cleanup(self):
        """Whatever happened: nothing of ours stays mounted or running. (A remount.sh cut
        short may still start a daemon: it is looked for again after a moment.)"""
        for _ in range(3):
            if mounted(self.mnt):
                p = run(["fusermount3", "-u", self.mnt])
                if p.returncode != 0:
                    run(["fusermount3", "-uz", self.mnt])
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                self.proc = None
            if os.path.exists(self.image):
                run(["flock", "-x", "-w", "60", self.image, "true"])
            time.sleep(0.3)
            if not mounted(self.mnt) and not self.daemon_pids():
                break
        if self in self.rw.live:
            self.rw.live.remove(self)
        if not self.rw.keep and not self.wl.failures and os.path.exists(self.image):
            os.unlink(self.image)


class Ext4(Target):
    kind = "ext4"

    def __init__(self, rw, workload):
        super().__init__(rw, workload)
        self.image = os.path.join(self.dir, "ext4.img")
        self.loop = None
        self.remount_script = os.path.join(self.dir, "remount.sh")

    def create(self):
        if os.path.exists(self.image):
            os.unlink(self.image)
        with open(self.image, "wb") as f:
            f.truncate(4 << 30)
        p = run(["losetup", "--find", "--show", self.image])
        if p.returncode != 0:
            raise SetupError(f"losetup {self.image} failed: {p.stderr.strip()}")
        self.loop = p.stdout.strip()
        p = run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", self.loop])
        if p.returncode != 0:
            raise SetupError(f"mkfs.ext4 {self.loop} failed: {p.stderr.strip()}")
        self.mount()
        with open(self.remount_script, "w") as f:
            f.write(f"#!/bin/sh\numount {shlex.quote(self.mnt)} && mount {self.loop} {shlex.quote(self.mnt)}\n")
        os.chmod(self.remount_script, 0o755)

    def mount(self):
        p = run(["mount", self.loop, self.mnt])
        if p.returncode != 0:
            raise SetupError(f"mount {self.loop} {self.mnt} failed: {p.stderr.strip()}")

    def remount(self):
        p = run(["umount", self.mnt])
        if p.returncode != 0:
            self.wl.fail(f"umount {self.mnt} (reference) failed: {p.stderr.strip()}")
            raise Abort()
        p = run(["e2fsck", "-fn", self.loop])
        if p.returncode != 0:
            self.wl.fail(f"e2fsck -fn of the reference ext4 failed ({p.returncode}):\n{tail(p.stdout + p.stderr)}")
        self.mount()

    def destroy(self):
        self.cleanup()

    def cleanup(self):
        self.release_kernel_mount()
        if self.loop:
            run(["losetup", "-d", self.loop])
            self.loop = None
        if os.path.exists(self.image):
            os.unlink(self.image)


class Tmpfs(Target):
    kind = "tmpfs"
    can_remount = False
    remount_script = None

    def create(self):
        p = run(["mount", "-t", "tmpfs", "-o", "size=4g,mode=0755", "realworld", self.mnt])
        if p.returncode != 0:
            raise SetupError(f"mount -t tmpfs on {self.mnt} failed: {p.stderr.strip()}")

    def remount(self):
        pass  # tmpfs keeps nothing over an unmount

    def flush(self):
        pass

    def destroy(self):
        self.cleanup()

    def cleanup(self):
        self.release_kernel_mount()


# --- Results -----------------------------------------------------------------------------

Row = collections.namedtuple("Row", "name h2 ref ok note")


class Workload:
    def __init__(self, name):
        self.name = name
        self.rows = []
        self.failures = []
        self.notes = []

    def fail(self, message):
        say(f"  FAIL [{self.name}] {message}")
        self.failures.append(message)

    def check(self, condition, message):
        if not condition:
            self.fail(message)
        return condition

    def note(self, message):
        say(f"  NOTE [{self.name}] {message}")
        self.notes.append(message)

    def mark(self):
        return len(self.failures)

    def row(self, name, h2, ref, mark, note="", ok=None):
        if ok is None:
            ok = len(self.failures) == mark
        self.rows.append(Row(name, h2, ref, ok, note))
        ratio = f"{h2 / ref:.2f}x" if h2 is not None and ref else "-"
        h2s = f"{h2:.2f}" if h2 is not None else "-"
        refs = f"{ref:.2f}" if ref is not None else "-"
        say(f"  {name}: hammer2 {h2s} s, reference {refs} s ({ratio}) {'PASS' if ok else 'FAIL'}"
            + (f" — {note}" if note else ""))


class Timer:
    def __init__(self):
        self.seconds = None

    def __enter__(self):
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.seconds = time.monotonic() - self.started
        return False


# --- The run -----------------------------------------------------------------------------
