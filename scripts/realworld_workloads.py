"""scripts/realworld: the workloads (git, sqlite with kill -9 rounds, rsync, tar, fsx,
large directories), as methods RealWorld inherits."""

import collections
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import sqlite3
import stat
import subprocess
import sys
import sysconfig
import threading
import time

from realworld_support import *  # noqa: F401,F403 (helpers and targets)


class Workloads:
    def git_env(self, step=0):
        date = f"@{1700000000 + step * 60} +0000"
        return dict(self.env, HOME=os.path.join(self.workdir, "home"), GIT_CONFIG_NOSYSTEM="1",
                    GIT_AUTHOR_NAME="realworld", GIT_AUTHOR_EMAIL="realworld@example.invalid",
                    GIT_COMMITTER_NAME="realworld", GIT_COMMITTER_EMAIL="realworld@example.invalid",
                    GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)

    def git_source(self):
        src = os.path.join(self.inputs, "git-src")
        if os.path.exists(src):
            return src
        home = os.path.join(self.workdir, "home")
        os.makedirs(home, exist_ok=True)
        with open(os.path.join(home, ".gitconfig"), "w") as f:
            f.write("[init]\n\tdefaultBranch = main\n[gc]\n\tauto = 0\n[maintenance]\n\tauto = false\n"
                    "[safe]\n\tdirectory = *\n[advice]\n\tdetachedHead = false\n")
        if self.quick:
            origin = "/usr/include/linux"
            ignore = None
        else:
            origin = sysconfig.get_paths()["stdlib"]
            skip = {"__pycache__", "site-packages", "dist-packages", "lib-dynload", "_bundled"}

            def ignore(directory, names):
                out = set()
                for n in names:
                    p = os.path.join(directory, n)
                    if n in skip or n.startswith("config-3") or n.endswith((".pyc", ".so", ".a")):
                        out.add(n)
                    elif os.path.isfile(p) and os.path.getsize(p) > (1 << 20):
                        out.add(n)
                return out
        if not os.path.isdir(origin):
            raise SetupError(f"{origin} is missing (the git workload's source tree)")
        shutil.copytree(origin, src, symlinks=True, ignore=ignore)
        env = self.git_env(0)
        for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", f"import {origin}"]):
            p = run(args, cwd=src, env=env)
            if p.returncode != 0:
                raise SetupError(f"{' '.join(args)} in {src} failed: {p.stderr.strip()}")
        files = run(["git", "ls-files"], cwd=src, env=env).stdout.splitlines()
        say(f"  source repository: {len(files)} files of {origin}")
        return src

    def git_edits(self, wl, target, repo, commits, files):
        files = list(files)
        for i in range(1, commits + 1):
            rng = random.Random(1000 + i)
            for j in range(4):
                name = rng.choice(files)
                path = os.path.join(repo, name)
                with open(path, "rb") as f:
                    data = f.read()
                lines = data.split(b"\n")
                k = rng.randrange(len(lines) + 1)
                how = rng.randrange(3)
                if how == 0:
                    lines.insert(k, f"# realworld edit {i}.{j}: {rng.random()}".encode())
                elif how == 1 and len(lines) > 3:
                    del lines[k:k + rng.randint(1, 3)]
                else:
                    lines[k:k] = [f"# appended block {i}.{j} line {n} {rng.random()}".encode() for n in range(20)]
                with open(path, "wb") as f:
                    f.write(b"\n".join(lines))
            new = f"realworld-added/dir{i % 5}/file{i}.txt"
            os.makedirs(os.path.dirname(os.path.join(repo, new)), exist_ok=True)
            with open(os.path.join(repo, new), "w") as f:
                for n in range(rng.randint(50, 500)):
                    f.write(f"line {n} of added file {i}: {rng.random()} {'x' * rng.randint(0, 80)}\n")
            files.append(new)
            if i % 4 == 0:
                victim = files.pop(rng.randrange(len(files)))
                os.unlink(os.path.join(repo, victim))
            if i % 6 == 0:
                old = files.pop(rng.randrange(len(files)))
                newname = f"realworld-renamed/{i}/{os.path.basename(old)}"
                os.makedirs(os.path.dirname(os.path.join(repo, newname)), exist_ok=True)
                os.rename(os.path.join(repo, old), os.path.join(repo, newname))
                files.append(newname)
            if i % 10 == 0:
                os.chmod(os.path.join(repo, rng.choice(files)), 0o755)
            env = self.git_env(i)
            self.cmd(wl, target, ["git", "add", "-A"], repo, "git add -A", env=env)
            self.cmd(wl, target, ["git", "commit", "-q", "-m", f"realworld edit {i}"], repo, "git commit", env=env)

    def git_state(self, wl, target, repo):
        env = self.git_env(100)
        head = self.cmd(wl, target, ["git", "rev-parse", "HEAD"], repo, "git rev-parse HEAD", env=env).stdout.strip()
        files = self.cmd(wl, target, ["git", "ls-files", "-s"], repo, "git ls-files -s", env=env).stdout
        status = self.cmd(wl, target, ["git", "status", "--porcelain"], repo, "git status", env=env).stdout
        return head, files, status

    def git_compare(self, wl, h2_state, ref_state, when):
        (h_head, h_files, h_status), (r_head, r_files, r_status) = h2_state, ref_state
        wl.check(h_head == r_head, f"{when}: HEAD is {h_head} on hammer2, {r_head} on the reference")
        if h_files != r_files:
            a, b = h_files.splitlines(), r_files.splitlines()
            diff = [f"hammer2: {x!r} / reference: {y!r}" for x, y in zip(a, b) if x != y][:5]
            wl.fail(f"{when}: git ls-files -s differs ({len(a)} vs {len(b)} entries): " + "; ".join(diff))
        wl.check(h_status == "", f"{when}: git status on hammer2 is not clean:\n{tail(h_status, 10)}")
        wl.check(r_status == "", f"{when}: git status on the reference is not clean:\n{tail(r_status, 10)}")

    def wl_git(self, wl, h2, ref):
        src = self.git_source()
        files = run(["git", "ls-files"], cwd=src, env=self.git_env()).stdout.splitlines()
        warm([src])
        commits = 30
        states = {}
        times = {}
        for target in (ref, h2):
            top = target.path("git")
            os.makedirs(top)
            repo = os.path.join(top, "repo")
            with Timer() as t:
                self.cmd(wl, target, ["git", "clone", "-q", "file://" + src, repo], top, "git clone",
                         env=self.git_env(0))
                self.git_edits(wl, target, repo, commits, files)
                self.cmd(wl, target, ["git", "gc", "--aggressive", "--quiet"], repo, "git gc --aggressive",
                         env=self.git_env(50))
                self.cmd(wl, target, ["git", "fsck", "--full", "--no-progress"], repo, "git fsck --full",
                         env=self.git_env(50))
            times[target.kind] = t.seconds
            states[target.kind] = self.git_state(wl, target, repo)
        mark = wl.mark()
        self.git_compare(wl, states["hammer2"], states[ref.kind], "after the run")
        wl.row(f"git: clone, {commits} commits, gc --aggressive, fsck", times["hammer2"], times[ref.kind], mark,
               f"{len(files)} files")

        def verify(target):
            repo = target.path("git", "repo")
            self.cmd(wl, target, ["git", "fsck", "--full", "--no-progress"], repo, "git fsck --full after the remount",
                     env=self.git_env(60))
            states[target.kind + "-remount"] = self.git_state(wl, target, repo)

        self.verify_phase(wl, h2, ref, "git: remount, git fsck, HEAD, ls-files, status", verify)
        self.git_compare(wl, states["hammer2-remount"], states[ref.kind], "after the remount")
        a = manifest(h2.path("git", "repo"), skip={".git"})
        b = manifest(ref.path("git", "repo"), skip={".git"})
        for problem in compare_manifests(a, b, "hammer2", "the reference"):
            wl.fail(f"work tree after the remount: {problem}")

    # ----- sqlite ----------------------------------------------------------------------------
    def sqlite_run(self, path, mode, rows):
        con = sqlite3.connect(path, isolation_level=None, timeout=60)
        try:
            got = con.execute(f"PRAGMA journal_mode={mode}").fetchone()[0]
            if got.lower() != mode:
                raise RuntimeError(f"PRAGMA journal_mode={mode} gave {got}")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, name TEXT, data BLOB)")
            con.execute("CREATE INDEX t_k ON t(k)")
            rng = random.Random(7)
            for start in range(0, rows, 100):
                batch = []
                for i in range(start + 1, min(rows, start + 100) + 1):
                    size = 4000 + rng.randrange(4000) if i % 50 == 0 else rng.randrange(300)
                    batch.append((i, rng.randrange(1 << 30), f"row {i} {rng.random()}", rng.randbytes(size)))
                con.execute("BEGIN")
                con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", batch)
                con.execute("COMMIT")
            for start in range(0, rows // 10, 100):
                con.execute("BEGIN")
                for _ in range(100):
                    con.execute("UPDATE t SET name = ?, data = ? WHERE id = ?",
                                (f"updated {rng.random()}", rng.randbytes(rng.randrange(600)), rng.randint(1, rows)))
                con.execute("COMMIT")
            con.execute("BEGIN")
            con.execute("DELETE FROM t WHERE k % 20 = 3")
            con.execute("COMMIT")
            con.execute("VACUUM")
        finally:
            con.close()

    def sqlite_check(self, path):
        """(integrity_check result, row count, checksum of SELECT * ORDER BY id)."""
        con = sqlite3.connect(path, isolation_level=None, timeout=60)
        try:
            integrity = "; ".join(r[0] for r in con.execute("PRAGMA integrity_check").fetchall())
            h = hashlib.sha256()
            n = 0
            for row in con.execute("SELECT * FROM t ORDER BY id"):
                h.update(repr(row).encode())
                n += 1
            return integrity, n, h.hexdigest()
        finally:
            con.close()

    # The client reports a commit only once the database's directory was synced through a
    # descriptor it holds open. In rollback-journal mode a commit is durable once the
    # journal's unlink is; synchronous=EXTRA syncs the directory after it, but sqlite opens
    # the directory for that and, when the open fails, skips the sync and reports success
    # (unixDelete: "rc==SQLITE_CANTOPEN" becomes SQLITE_OK). A daemon killed between the
    # unlink and that open makes exactly that happen (the open gets ENOTCONN): the commit
    # was never synced, the journal comes back and rolls it back. Seen about once in 100
    # kill rounds: the daemon's trace ended with the unlink, and the database without its
    # journal held the reported commit.
    KILL_CLIENT = r"""
import os, sqlite3, sys
db, mode, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
directory = os.open(os.path.dirname(os.path.abspath(db)), os.O_RDONLY | os.O_DIRECTORY)
con = sqlite3.connect(db, isolation_level=None, timeout=60)
con.execute("PRAGMA journal_mode=" + mode)
# FULL makes a WAL commit durable when COMMIT returns; a rollback-journal commit is only
# durable once the journal's unlink is, which FULL does not sync (a crash then rolls the last
# transaction back, on any filesystem): EXTRA also syncs the directory after the unlink.
con.execute("PRAGMA synchronous=" + ("FULL" if mode == "wal" else "EXTRA"))
con.execute("CREATE TABLE IF NOT EXISTS k(id INTEGER PRIMARY KEY, payload BLOB)")
con.execute("CREATE TABLE IF NOT EXISTS meta(x INTEGER PRIMARY KEY CHECK (x = 0), last INTEGER)")
con.execute("INSERT OR IGNORE INTO meta VALUES (0, 0)")
n = con.execute("SELECT last FROM meta").fetchone()[0]
print("ready", flush=True)
while limit == 0 or n < limit:
    n += 1
    con.execute("BEGIN IMMEDIATE")
    con.execute("INSERT INTO k VALUES (?, randomblob(?))", (n, 200 + (n * 7919) % 6000))
    con.execute("UPDATE meta SET last = ?", (n,))
    con.execute("COMMIT")
    os.fsync(directory)
    print(n, flush=True)
"""

    def kill_round(self, wl, h2, ref, mode, seconds, known):
        """A client commits numbered transactions; the daemon is killed under it."""
        mark = wl.mark()
        db = h2.path("sqlite", f"kill-{mode}.db")
        errlog = os.path.join(self.logdir, f"sqlite-kill-{mode}-client.err")
        seen = []
        with open(errlog, "w") as err:
            client = subprocess.Popen([sys.executable, "-c", self.KILL_CLIENT, db, mode, "0"], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=err, text=True)
        self.children.append(client)
        try:
            self.kill_and_check(wl, h2, ref, mode, seconds, known, mark, db, errlog, client, seen)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
            self.children.remove(client)

    def kill_and_check(self, wl, h2, ref, mode, seconds, known, mark, db, errlog, client, seen):
        ready = threading.Event()

        def reader():
            for line in client.stdout:
                line = line.strip()
                if line == "ready":
                    ready.set()
                elif line.isdigit():
                    seen.append(int(line))
            ready.set()

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        ready.wait(60)
        started = time.monotonic()
        while time.monotonic() - started < seconds and client.poll() is None:
            time.sleep(0.05)
        if client.poll() is not None:
            with open(errlog) as f:
                wl.fail(f"kill -9 ({mode}): the client exited (status {client.returncode}) before the kill:\n"
                        f"{tail(f.read())}")
            thread.join(10)
            raise Abort()
        pid = h2.kill_daemon()
        elapsed = time.monotonic() - started
        try:
            client.wait(timeout=60)
        except subprocess.TimeoutExpired:
            wl.fail(f"kill -9 ({mode}): the client still runs 60 s after the daemon was killed; killing it")
            client.kill()
            client.wait()
        thread.join(30)
        committed = list(seen)
        say(f"  kill -9 ({mode}): daemon {pid} killed after {elapsed:.1f} s, {len(committed)} commits reported")
        h2.unmount(lazy=True)
        # Evidence for a failure, kept only then: the image as the crash left it (before
        # the remount replays its intent log), and the database files as the replay made
        # them (before sqlite opens them and rolls a hot journal back).
        evidence = os.path.join(self.logdir, f"sqlite-kill-{mode}-{pid}")
        run(["cp", "--sparse=always", h2.image, evidence + ".img"])
        h2.fsck()
        h2.mount()
        # What the crash left, before sqlite looks (opening rolls a hot journal back and
        # deletes it): said with a failure, to tell a journal that came back from lost pages.
        left = {suffix: os.path.getsize(db + suffix) for suffix in ("-journal", "-wal") if os.path.exists(db + suffix)}
        found = ", ".join(f"{db}{k}: {v} bytes" for k, v in left.items()) or "no journal or WAL file"
        for suffix in ("",) + tuple(left):
            shutil.copyfile(db + suffix, evidence + ".db" + suffix)
        try:
            con = sqlite3.connect(db, isolation_level=None, timeout=60)
            integrity = "; ".join(r[0] for r in con.execute("PRAGMA integrity_check").fetchall())
            ids = [r[0] for r in con.execute("SELECT id FROM k ORDER BY id")]
            last = con.execute("SELECT last FROM meta").fetchone()[0]
            con.close()
        except sqlite3.Error as e:
            wl.fail(f"kill -9 ({mode}): the database cannot be read after the remount: {e}")
            raise Abort()
        top = committed[-1] if committed else 0
        wl.check(integrity == "ok", f"kill -9 ({mode}): integrity_check after the remount: {integrity[:500]}")
        missing = sorted(set(committed) - set(ids))
        wl.check(not missing, f"kill -9 ({mode}): {len(missing)} committed ids missing after the remount, "
                              f"e.g. {missing[:10]} (client saw {len(committed)} commits up to {top}; "
                              f"database holds {len(ids)} rows up to {ids[-1] if ids else 0}; after the remount: {found})")
        wl.check(ids == list(range(1, len(ids) + 1)),
                 f"kill -9 ({mode}): the ids present are not 1..N: {len(ids)} rows, "
                 f"first gaps {[i for i in range(1, len(ids) + 1) if i not in set(ids)][:10]}")
        wl.check(top <= len(ids) <= top + 1,
                 f"kill -9 ({mode}): {len(ids)} rows present, the client saw {top} commits "
                 f"(at most one more may have committed unreported)")
        wl.check(last == len(ids), f"kill -9 ({mode}): meta.last is {last}, {len(ids)} rows present")
        for name, expected in known.items():
            got = self.sqlite_check(h2.path("sqlite", name))
            wl.check(got == expected, f"kill -9 ({mode}): {name} changed by the kill: {got} instead of {expected}")
        if len(wl.failures) == mark:
            for leftover in [f"/dev/shm/hammer2.{pid}.ktr", evidence + ".img"] + [evidence + ".db" + s for s in ("",) + tuple(left)]:
                try:
                    os.unlink(leftover)  # the dead daemon's trace segment, the evidence
                except OSError:
                    pass
        else:
            say(f"  kept: {evidence}.img (the image the crash left), {evidence}.db* (the files the replay made), "
                f"/dev/shm/hammer2.{pid}.ktr (the daemon's trace: hammer2 ktrdump)")
        # The same number of commits on the reference, for the time it takes there.
        with Timer() as tr:
            p = run([sys.executable, "-c", self.KILL_CLIENT, ref.path("sqlite", f"kill-{mode}.db"), mode,
                     str(max(top, 1))])
        if p.returncode != 0:
            wl.fail(f"kill -9 ({mode}): the client on the reference failed:\n{tail(p.stderr)}")
        wl.row(f"sqlite kill -9 ({mode}): {top} commits, sync={'FULL' if mode == 'wal' else 'EXTRA'}", elapsed, tr.seconds, mark,
               f"{len(ids)} rows after remount; reference: same commits, no kill")

    def wl_sqlite(self, wl, h2, ref):
        rows = 5000 if self.quick else 50000
        results = {}
        for mode in ("wal", "delete"):
            mark = wl.mark()
            times = {}
            for target in (ref, h2):
                os.makedirs(target.path("sqlite"), exist_ok=True)
                path = target.path("sqlite", f"{mode}.db")
                with Timer() as t:
                    try:
                        self.sqlite_run(path, mode, rows)
                        results[(target.kind, mode)] = self.sqlite_check(path)
                    except (sqlite3.Error, RuntimeError, OSError) as e:
                        wl.fail(f"{mode} on {target.kind}: {type(e).__name__}: {e}")
                        raise Abort()
                times[target.kind] = t.seconds
            h, r = results[("hammer2", mode)], results[(ref.kind, mode)]
            wl.check(h[0] == "ok", f"{mode}: integrity_check on hammer2: {h[0][:500]}")
            wl.check(r[0] == "ok", f"{mode}: integrity_check on the reference: {r[0][:500]}")
            wl.check(h == r, f"{mode}: hammer2 has {h[1]} rows, checksum {h[2][:16]}; the reference {r[1]} rows, "
                             f"checksum {r[2][:16]}")
            journal = "WAL" if mode == "wal" else "rollback journal"
            wl.row(f"sqlite {journal}: {rows} inserts/100 per txn, updates, VACUUM", times["hammer2"],
                   times[ref.kind], mark, f"{h[1]} rows left")

        def verify(target):
            for mode in ("wal", "delete"):
                got = self.sqlite_check(target.path("sqlite", f"{mode}.db"))
                wl.check(got == results[(ref.kind, mode)],
                         f"{mode} after the remount on {target.kind}: integrity {got[0][:200]}, {got[1]} rows, "
                         f"checksum {got[2][:16]}; expected {results[(ref.kind, mode)][1]} rows, "
                         f"{results[(ref.kind, mode)][2][:16]}")

        self.verify_phase(wl, h2, ref, "sqlite: remount, integrity_check, checksums", verify)
        known = {f"{mode}.db": results[(ref.kind, mode)] for mode in ("wal", "delete")}
        seconds = 3 if self.quick else 8
        for mode in ("wal", "delete"):
            for _ in range(self.args.kill_rounds):
                for target in (h2, ref):
                    for suffix in ("", "-wal", "-shm", "-journal"):
                        p = target.path("sqlite", f"kill-{mode}.db{suffix}")
                        if os.path.exists(p):
                            os.unlink(p)
                self.kill_round(wl, h2, ref, mode, seconds, known)

    # ----- rsync -----------------------------------------------------------------------------
    def decorated_tree(self):
        """A tree with what -X and -A carry: user.* attributes (text, binary, empty, 3 KiB:
        ext4 keeps all of an inode's attributes in one 4 KiB block unless ea_inode is on),
        trusted.* and security.capability, access ACLs on files and default ACLs on
        directories (inherited by what is created below them), built once per run."""
        tree = os.path.join(self.inputs, "decorated")
        if os.path.isdir(tree):
            return tree
        source = "/usr/include/linux"
        if not os.path.isdir(source):
            raise SetupError(f"{source} is missing (the decorated tree's source)")
        shutil.copytree(source, tree, symlinks=True)
        rng = random.Random(21)
        dirs = sorted(d for d, _, _ in os.walk(tree))
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(tree) for f in fs
                       if not os.path.islink(os.path.join(d, f)))
        for i, d in enumerate(dirs[1:6]):
            p = run(["setfacl", "-d", "-m", "u:nobody:rwx,g:daemon:r-x,o::r-x", d])
            if p.returncode != 0:
                raise SetupError(f"setfacl -d on {d} (the inputs' filesystem needs ACLs): {p.stderr.strip()}")
            with open(os.path.join(d, f"inherits-{i}"), "w") as f:
                f.write("created under a default ACL\n")
        for i, f in enumerate(rng.sample(files, len(files) // 3)):
            os.setxattr(f, "user.realworld.text", f"value {i}".encode())
            if i % 3 == 0:
                os.setxattr(f, "user.realworld.binary", rng.randbytes(rng.randrange(1, 300)))
            if i % 7 == 0:
                os.setxattr(f, "user.realworld.empty", b"")
            if i % 11 == 0:
                os.setxattr(f, "trusted.realworld", b"root only")
            if i % 5 == 0:
                p = run(["setfacl", "-m", f"u:{1000 + i % 3}:rw,g:{100 + i % 2}:r,m::rw", f])
                if p.returncode != 0:
                    raise SetupError(f"setfacl on {f}: {p.stderr.strip()}")
        os.setxattr(files[0], "user.realworld.large", rng.randbytes(3000))
        p = run(["setcap", "cap_net_raw+ep", files[1]])
        if p.returncode != 0:
            raise SetupError(f"setcap on {files[1]} (libcap2-bin): {p.stderr.strip()}")
        return tree

    def attribute_dump(self, wl, root):
        """Every attribute and ACL under root, paths relative (getfattr and getfacl), one
        block per file sorted by name (directory order differs between filesystems)."""
        def blocks(text):
            return "\n\n".join(sorted(b.strip() for b in text.split("\n\n") if b.strip())) + "\n"
        p = run(["getfattr", "-R", "-P", "-d", "-m", "-", "-e", "hex", "."], cwd=root)
        wl.check(p.returncode == 0, f"getfattr -R in {root}: {tail(p.stderr)}")
        q = run(["getfacl", "-R", "-P", "-p", "."], cwd=root)
        wl.check(q.returncode == 0, f"getfacl -R in {root}: {tail(q.stderr)}")
        return blocks(p.stdout), blocks(q.stdout)

    def wl_rsync(self, wl, h2, ref):
        sources = ["/usr/include/linux"] if self.quick else ["/usr/include", "/usr/share/doc"]
        for s in sources:
            if not os.path.isdir(s):
                raise SetupError(f"{s} is missing (the rsync workload's source)")
        sources.append(self.decorated_tree())
        warm(sources)
        flags = ["-aHAX"]
        files = sum(len(f) for s in sources for _, _, f in os.walk(s))
        times, vtimes = {}, {}
        mark = wl.mark()
        for target in (ref, h2):
            dest = target.path("rsync")
            os.makedirs(dest)
            with Timer() as t:
                self.cmd(wl, target, ["rsync"] + flags + sources + [dest + "/"], dest, "rsync " + " ".join(flags))
                target.flush()
            times[target.kind] = t.seconds
        wl.row(f"rsync {' '.join(flags)} of {' '.join(sources)}", times["hammer2"], times[ref.kind], mark,
               f"{files} files")

        def verify(target, when):
            dest = target.path("rsync")
            p = self.cmd(wl, target, ["rsync"] + flags + ["-c", "--dry-run", "--itemize-changes"] + sources +
                         [dest + "/"], dest, "rsync --dry-run verify")
            wl.check(p.stdout.strip() == "", f"{when}: rsync -c --dry-run --itemize-changes on {target.kind} reports "
                                             f"{len(p.stdout.splitlines())} differences:\n{tail(p.stdout, 15)}")

        mark = wl.mark()
        for target in (ref, h2):
            with Timer() as t:
                verify(target, "after the copy")
            vtimes[target.kind] = t.seconds
        wl.row(f"rsync {' '.join(flags)}c --dry-run --itemize-changes (verify)", vtimes["hammer2"], vtimes[ref.kind],
               mark, "must report nothing")
        self.verify_phase(wl, h2, ref, "rsync: remount, verify again", lambda t: verify(t, "after the remount"))

    # ----- tar -------------------------------------------------------------------------------
    def tar_archive(self):
        archive = os.path.join(self.inputs, "tree.tar")
        if os.path.exists(archive):
            return archive
        tree = "/usr/include/linux" if self.quick else "/usr/include"
        if not os.path.isdir(tree):
            raise SetupError(f"{tree} is missing (the tar workload's tree)")
        p = run(["tar", "-cf", archive, "-C", os.path.dirname(tree), os.path.basename(tree)])
        if p.returncode != 0:
            raise SetupError(f"tar -cf {archive} of {tree} failed: {p.stderr.strip()}")
        return archive

    def tar_modify(self, dest, members):
        rng = random.Random(99)
        regular = [m for m, kind in members if kind == "-"]
        dirs = [m for m, kind in members if kind == "d"]
        exists = lambda rel: os.path.lexists(os.path.join(dest, rel))
        for d in rng.sample(dirs[1:], min(2, len(dirs) - 1)):  # two subtrees gone
            shutil.rmtree(os.path.join(dest, d), ignore_errors=True)
        picks = rng.sample(regular, len(regular))
        n = len(picks)
        groups = {"rewrite": picks[:n * 5 // 100], "truncate": picks[n * 5 // 100:n * 7 // 100],
                  "delete": picks[n * 7 // 100:n * 10 // 100], "chmod": picks[n * 10 // 100:n * 13 // 100],
                  "symlink": picks[n * 13 // 100:n * 13 // 100 + 10], "dir": picks[n * 13 // 100 + 10:n * 13 // 100 + 15],
                  "hardlink": picks[n * 13 // 100 + 15:n * 13 // 100 + 20],
                  "utime": picks[n * 13 // 100 + 20:n * 15 // 100 + 20], "append": picks[n * 15 // 100 + 20:n * 16 // 100 + 20]}
        for rel in groups["rewrite"]:
            if exists(rel):
                with open(os.path.join(dest, rel), "wb") as f:
                    f.write(rng.randbytes(rng.randrange(1, 200000)))
        for rel in groups["truncate"]:
            if exists(rel):
                p = os.path.join(dest, rel)
                os.truncate(p, os.path.getsize(p) // rng.choice((2, 3, 1 << 40)))
        for rel in groups["delete"]:
            if exists(rel):
                os.unlink(os.path.join(dest, rel))
        for rel in groups["chmod"]:
            if exists(rel):
                os.chmod(os.path.join(dest, rel), 0o600)
        for rel in groups["symlink"]:
            if exists(rel):
                os.unlink(os.path.join(dest, rel))
                os.symlink(rng.choice(("nowhere", "../elsewhere", os.path.basename(rel) + ".orig")),
                           os.path.join(dest, rel))
        for rel in groups["dir"]:
            if exists(rel):
                os.unlink(os.path.join(dest, rel))
                os.mkdir(os.path.join(dest, rel))
        targets = [r for r in regular if exists(r) and os.path.isfile(os.path.join(dest, r))]
        for rel in groups["hardlink"]:
            if exists(rel) and targets:
                os.unlink(os.path.join(dest, rel))
                os.link(os.path.join(dest, rng.choice(targets)), os.path.join(dest, rel))
        for rel in groups["utime"]:
            if exists(rel):
                os.utime(os.path.join(dest, rel), (1000000000, 1000000000), follow_symlinks=False)
        for rel in groups["append"]:
            if exists(rel) and os.path.isfile(os.path.join(dest, rel)):
                with open(os.path.join(dest, rel), "ab") as f:
                    f.write(b"/* appended by realworld */\n" * rng.randint(1, 100))
        for i in range(60):  # new files in existing directories, and a new tree
            d = rng.choice(dirs)
            if os.path.isdir(os.path.join(dest, d)):
                with open(os.path.join(dest, d, f"realworld-new-{i}.h"), "wb") as f:
                    f.write(rng.randbytes(rng.randrange(0, 50000)))
        for i in range(20):
            p = os.path.join(dest, "realworld-new-tree", f"sub{i % 4}", f"file{i}")
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(f"new file {i}\n" * rng.randrange(1, 1000))

    def wl_tar(self, wl, h2, ref):
        archive = self.tar_archive()
        warm([archive])
        listing = run(["tar", "-tvf", archive]).stdout.splitlines()
        names = run(["tar", "-tf", archive]).stdout.splitlines()
        members = [(n.rstrip("/"), line[0]) for n, line in zip(names, listing)]
        member_set = {m for m, _ in members}
        times = collections.defaultdict(dict)
        rcs = {}
        for target in (ref, h2):
            dest = target.path("tar")
            os.makedirs(dest)
            with Timer() as t:
                self.cmd(wl, target, ["tar", "-xf", archive, "-C", dest], dest, "tar -xf")
                target.flush()
            times["extract"][target.kind] = t.seconds
        mark = wl.mark()
        p = run(["diff", "-r", "--no-dereference", h2.path("tar"), ref.path("tar")])
        wl.check(p.returncode == 0, f"after the first extraction, diff -r hammer2 reference:\n{tail(p.stdout + p.stderr)}")
        for problem in compare_manifests(manifest(h2.path("tar")), manifest(ref.path("tar")), "hammer2",
                                         "the reference", mtimes_for=member_set):
            wl.fail(f"after the first extraction: {problem}")
        wl.row(f"tar -xf ({len(members)} entries)", times["extract"]["hammer2"], times["extract"][ref.kind], mark)
        mark = wl.mark()
        for target in (ref, h2):
            dest = target.path("tar")
            with Timer() as t:
                self.tar_modify(dest, members)
                target.flush()
            times["modify"][target.kind] = t.seconds
        wl.row("tar: change, delete, add, replace files", times["modify"]["hammer2"], times["modify"][ref.kind], mark)
        mark = wl.mark()
        for target in (ref, h2):
            dest = target.path("tar")
            with Timer() as t:
                rcs[target.kind] = run(["tar", "-xf", archive, "-C", dest], cwd=dest)
                target.flush()
            times["again"][target.kind] = t.seconds
        a, b = rcs["hammer2"], rcs[ref.kind]
        wl.check(a.returncode == b.returncode == 0,
                 f"tar -xf over the changed tree: status {a.returncode} on hammer2, {b.returncode} on the reference\n"
                 f"  hammer2:\n{tail(a.stderr)}\n  reference:\n{tail(b.stderr)}")

        def compare(when):
            p = run(["diff", "-r", "--no-dereference", h2.path("tar"), ref.path("tar")])
            wl.check(p.returncode == 0, f"{when}, diff -r hammer2 reference:\n{tail(p.stdout + p.stderr)}")
            for problem in compare_manifests(manifest(h2.path("tar")), manifest(ref.path("tar")), "hammer2",
                                             "the reference", mtimes_for=member_set):
                wl.fail(f"{when}: {problem}")

        compare("after extracting again")
        wl.row("tar -xf again over the changed tree", times["again"]["hammer2"], times["again"][ref.kind], mark,
               "diff -r, modes, sizes, links, mtimes")

        self.verify_phase(wl, h2, ref, "tar: remount, diff -r again", lambda target: None)
        compare("after the remount")

    # ----- xattrs -----------------------------------------------------------------------------
    def wl_xattrs(self, wl, h2, ref):
        tree = self.decorated_tree()
        archive = os.path.join(self.inputs, "decorated.tar")
        tar_flags = ["--xattrs", "--xattrs-include=*", "--acls"]
        if not os.path.exists(archive):
            p = run(["tar"] + tar_flags + ["-cf", archive, "-C", tree, "."])
            if p.returncode != 0:
                raise SetupError(f"tar --xattrs --acls -cf of {tree}: {p.stderr.strip()}")
        expected = self.attribute_dump(wl, tree)
        files = sum(len(f) for _, _, f in os.walk(tree))
        times = collections.defaultdict(dict)
        for target in (ref, h2):
            for how, argv in (("rsync", ["rsync", "-aHAX", tree + "/", target.path("rsync") + "/"]),
                              ("tar", ["tar"] + tar_flags + ["-xpf", archive, "-C", target.path("tar")])):
                os.makedirs(target.path(how), exist_ok=True)
                with Timer() as t:
                    self.cmd(wl, target, argv, target.path(how), " ".join(argv[:3]))
                    target.flush()
                times[how][target.kind] = t.seconds

        def compare(target, when):
            for how in ("rsync", "tar"):
                got = self.attribute_dump(wl, target.path(how))
                for kind, a, b in (("getfattr", expected[0], got[0]), ("getfacl", expected[1], got[1])):
                    if a != b:
                        diff = [f"source: {x!r} / {target.kind}: {y!r}" for x, y in
                                zip(a.splitlines(), b.splitlines()) if x != y][:4]
                        wl.fail(f"{when}: {kind} -R of the {how} copy on {target.kind} differs from the source "
                                f"({len(a.splitlines())} vs {len(b.splitlines())} lines): " + "; ".join(diff))
            p = run(["rsync", "-aHAXc", "--dry-run", "--itemize-changes", tree + "/", target.path("rsync") + "/"])
            wl.check(p.returncode == 0 and p.stdout.strip() == "",
                     f"{when}: rsync -aHAXc --dry-run on {target.kind} reports:\n{tail(p.stdout + p.stderr, 10)}")
            p = run(["diff", "-r", "--no-dereference", tree, target.path("tar")])
            wl.check(p.returncode == 0, f"{when}: diff -r source {target.kind}/tar:\n{tail(p.stdout + p.stderr)}")

        mark = wl.mark()
        for target in (ref, h2):
            compare(target, "after the copies")
        wl.row(f"rsync -aHAX of a tree with xattrs and ACLs", times["rsync"]["hammer2"], times["rsync"][ref.kind],
               mark, f"{files} files")
        wl.row("tar --xattrs --acls -xpf of it", times["tar"]["hammer2"], times["tar"][ref.kind], wl.mark(),
               "getfattr/getfacl -R equal the source")
        self.verify_phase(wl, h2, ref, "xattrs: remount, compare again", lambda t: compare(t, "after the remount"))

    # ----- fsx -------------------------------------------------------------------------------
    def wl_fsx(self, wl, h2, ref):
        ops = self.args.fsx_ops or (3000 if self.quick else 20000)
        every = self.args.fsx_remount_every or (1000 if self.quick else 2500)
        size = "256k" if self.quick else "1m"
        results = {}
        for target in (ref, h2):
            out = os.path.join(self.logdir, f"fsx-{target.kind}.out")
            summary = os.path.join(self.logdir, f"fsx-{target.kind}.json")
            args = [sys.executable, FSX, target.path("fsx.file"), "--seed", str(self.args.seed), "--ops", str(ops),
                    "--size", size, "--summary-json", summary, "--logfile",
                    os.path.join(self.logdir, f"fsx-{target.kind}.ops")]
            if target.can_remount:
                args += ["--remount-cmd", target.remount_script, "--remount-every", str(every)]
            if target.kind == "hammer2":
                args += ["--expect-holes", "64k"]
                if self.args.fsx_allow_unsupported:
                    args.append("--allow-unsupported")
            elif target.kind == "tmpfs":
                args += ["--allow-unsupported"]  # tmpfs has no FALLOC_FL_ZERO_RANGE
            with Timer() as t:
                p = run(args, timeout=7200)
            with open(out, "w") as f:
                f.write("$ " + shlex.join(args) + "\n" + p.stdout + p.stderr)
            if target.kind == "hammer2":
                h2.adopt_scripted_mount()
            try:
                with open(summary) as f:
                    info = json.load(f)
            except (OSError, ValueError):
                info = {}
            results[target.kind] = (p, t.seconds, info)
            for line in p.stdout.splitlines():
                if "UNSUPPORTED" in line or "NOTE" in line:
                    say(f"  {target.kind}: {line}")
        mark = wl.mark()
        for kind, (p, seconds, info) in results.items():
            if p.returncode != 0:
                wl.fail(f"fsx on {kind} failed (status {p.returncode}; full output "
                        f"{os.path.join(self.logdir, f'fsx-{kind}.out')}):\n{tail(p.stdout + p.stderr, 60)}")
        h2info = results["hammer2"][2]
        unsupported = h2info.get("unsupported") or {}
        note = f"seed {self.args.seed}, {h2info.get('remounts', 0)} remounts on hammer2"
        if unsupported:
            note += "; unsupported on hammer2: " + ", ".join(sorted(unsupported))
        wl.row(f"fsx: {ops} ops, file up to {size}", results["hammer2"][1], results[ref.kind][1], mark, note)

        def verify(target):
            st = os.stat(target.path("fsx.file"))
            wl.check(stat.S_ISREG(st.st_mode), f"fsx.file on {target.kind} is not a regular file after the remount")

        self.verify_phase(wl, h2, ref, "fsx: remount", verify)

    # ----- dirs ------------------------------------------------------------------------------
    def wl_dirs(self, wl, h2, ref):
        n = 10000 if self.quick else 100000
        names = [f"f{i:07d}" if i % 10 else f"long-name-{i:07d}-" + "x" * 82 for i in range(n)]
        renamed = ["r" + name for name in names]
        phases = collections.defaultdict(dict)
        failed = collections.Counter()

        def phase(label, target, fn):
            before = wl.mark()
            with Timer() as t:
                fn()
            phases[label][target.kind] = t.seconds
            failed[label] += wl.mark() - before

        for target in (ref, h2):
            d = target.path("dirs", "d")
            os.makedirs(d)
            dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            try:
                def create():
                    for name in names:
                        os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644, dir_fd=dfd))
                    target.flush()

                def ls():
                    p = run("ls -f | wc -l", cwd=d, shell=True)
                    count = int(p.stdout.strip() or -1)
                    wl.check(count == n + 2, f"ls -f | wc -l on {target.kind} gives {count}, expected {n + 2}")

                def stat_all():
                    bad = 0
                    for name in names:
                        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                        if not stat.S_ISREG(st.st_mode) or st.st_size != 0 or st.st_nlink != 1:
                            bad += 1
                    wl.check(bad == 0, f"{bad} files on {target.kind} are not empty regular files with one link")

                def rename_all():
                    for old, new in zip(names, renamed):
                        os.rename(old, new, src_dir_fd=dfd, dst_dir_fd=dfd)
                    target.flush()

                phase("create", target, create)
                phase("ls", target, ls)
                phase("stat", target, stat_all)
                phase("rename", target, rename_all)
            finally:
                os.close(dfd)

        labels = {"create": f"dirs: create {n} files in one directory", "ls": "dirs: ls -f | wc -l",
                  "stat": f"dirs: stat {n} files", "rename": f"dirs: rename {n} files",
                  "unlink": f"dirs: unlink {n} files, directory empty"}

        def row(key):
            wl.row(labels[key], phases[key].get("hammer2"), phases[key].get(ref.kind), 0, ok=failed[key] == 0)

        for key in ("create", "ls", "stat", "rename"):
            row(key)

        def listing(target):
            got = os.listdir(target.path("dirs", "d"))
            wl.check(len(got) == n and set(got) == set(renamed),
                     f"after the remount {target.kind} lists {len(got)} entries; {len(set(renamed) - set(got))} "
                     f"renamed names missing (e.g. {sorted(set(renamed) - set(got))[:3]}), "
                     f"{len(set(got) - set(renamed))} unexpected (e.g. {sorted(set(got) - set(renamed))[:3]})")

        self.verify_phase(wl, h2, ref, "dirs: remount, listing matches", listing)
        for target in (ref, h2):
            d = target.path("dirs", "d")
            dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            try:
                def unlink_all():
                    for name in renamed:
                        os.unlink(name, dir_fd=dfd)
                    left = os.listdir(d)
                    wl.check(left == [], f"{len(left)} entries left on {target.kind} after unlinking all: {left[:5]}")
                    target.flush()
                    # The emptied directory: as many links as a new empty one (1 on hammer2, as on
                    # DragonFly; 2 on ext4), a size no larger, and rmdir works.
                    fresh = target.path("dirs", "fresh")
                    os.mkdir(fresh)
                    a, b = os.stat(d), os.stat(fresh)
                    os.rmdir(fresh)
                    wl.check(a.st_nlink == b.st_nlink, f"the emptied directory on {target.kind} has {a.st_nlink} "
                                                       f"links, a new empty one {b.st_nlink}")
                    try:
                        os.rmdir(d)
                    except OSError as e:
                        wl.fail(f"rmdir of the emptied directory on {target.kind}: {e}")

                phase("unlink", target, unlink_all)
            finally:
                os.close(dfd)
        row("unlink")

        def gone(target):
            wl.check(os.listdir(target.path("dirs")) == [], f"dirs/ on {target.kind} is not empty after the remount")

        self.verify_phase(wl, h2, ref, "dirs: remount, directory gone", gone)

    # ----- report ----------------------------------------------------------------------------
