// The daemon's trace segment through a real mount (issue 9, docs/ktr.md): ktrdump shows
// the events of what was done, the statistics count it, a reader attached under heavy
// load never sees a torn update, masks change at run time, and the segment of a killed
// daemon is still readable.

import Foundation
import Glibc
import HAMMER2TestSupport
import HAMMER2Trace
import Synchronization
import XCTest

final class TraceMountTests: XCTestCase {
    var image = ""

    override func setUpWithError() throws {
        image = FileManager.default.temporaryDirectory.appendingPathComponent("hammer2-ktr-\(getpid())-\(UUID().uuidString.prefix(6)).img").path
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "1g", image]).status, 0)
    }

    override func tearDown() {
        unlink(image)
        super.tearDown()
    }

    func write(_ path: String, _ bytes: [UInt8]) {
        let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
        XCTAssertGreaterThanOrEqual(fd, 0)
        XCTAssertEqual(bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }, bytes.count)
        XCTAssertEqual(fsync(fd), 0)
        close(fd)
    }

    func testKtrdumpAndStatShowWhatTheMountDidAndAKilledDaemonsSegmentStaysReadable() throws {
        let mount = try MountedImage("\(image)@DATA", options: ["-o", "rw,flush=3600"])
        let segment = TraceFiles.defaultPath(pid: mount.daemonPID)
        XCTAssertTrue(FileManager.default.fileExists(atPath: segment), "the daemon's segment at \(segment)")
        // 1 MiB of text (compresses) and 1 MiB of random bytes, fsynced, then read back.
        let text = Array(String(repeating: "hammer2 trace segment ", count: 50_000).utf8.prefix(1 << 20))
        var random = SplitMix64(seed: 9)
        write(mount.mountpoint.path + "/text", text)
        write(mount.mountpoint.path + "/random", random.bytes(1 << 20))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: mount.mountpoint.path + "/text")).count, text.count)

        let dump = try Binaries.run("hammer2", ["ktrdump", mount.mountpoint.path])
        XCTAssertEqual(dump.status, 0, dump.stderr)
        for event in ["fuse.create ", "fuse.write ", "fuse.fsync.done ", "io.write ", "flush.start ", "flush.end ",
                      "compress.block ", "alloc.block "] {
            XCTAssertTrue(dump.stdout.contains(event), "ktrdump shows \(event): \(dump.stdout.suffix(2000))")
        }
        XCTAssertTrue(dump.stdout.contains("pid \(mount.daemonPID) running"), dump.stdout.prefix(300).description)
        // Merged by time: the seconds column never goes back.
        let times = dump.stdout.split(separator: "\n").filter { !$0.hasPrefix("#") }
            .compactMap { Double($0.split(separator: " ").first ?? "") }
        XCTAssertGreaterThan(times.count, 50)
        XCTAssertEqual(times, times.sorted(), "events merged by time")
        // -m shows one subsystem only.
        let io = try Binaries.run("hammer2", ["ktrdump", "-m", "io", mount.mountpoint.path])
        let ioEvents = io.stdout.split(separator: "\n").filter { !$0.hasPrefix("#") }
        XCTAssertFalse(ioEvents.isEmpty)
        XCTAssertTrue(ioEvents.allSatisfy { $0.contains(" io.") }, io.stdout.prefix(1000).description)

        // The statistics: the PFS counted the bytes written, and compressed text stored
        // in fewer bytes than it was.
        let reader = try TraceReader(path: segment)
        let pfs = try XCTUnwrap(reader.statistics("pfs.DATA"))
        XCTAssertGreaterThanOrEqual(pfs["write_bytes"] ?? 0, 2 << 20)
        XCTAssertGreaterThanOrEqual(pfs["logical_bytes_flushed"] ?? 0, 2 << 20)
        XCTAssertLessThan(pfs["physical_bytes_flushed"] ?? .max, (pfs["logical_bytes_flushed"] ?? 0) - (512 << 10),
                          "LZ4 stores the text in well under its size")
        XCTAssertGreaterThanOrEqual(pfs["flushes"] ?? 0, 2)
        let volume = try XCTUnwrap(reader.statistics("volume.0"))
        XCTAssertGreaterThanOrEqual(volume["bytes_written"] ?? 0, (pfs["physical_bytes_flushed"] ?? 0))
        let stat = try Binaries.run("hammer2", ["stat", "-w", "-n", "1", mount.mountpoint.path])
        XCTAssertEqual(stat.status, 0, stat.stderr)
        for line in ["pfs.DATA (version 1)", "volume.0 (version 1)", "fuse (version 1)", "write.latency", "logical_bytes_flushed"] {
            XCTAssertTrue(stat.stdout.contains(line), "stat -w shows \(line): \(stat.stdout)")
        }

        // The readers never wait for the daemon: with it stopped (SIGSTOP), ktrdump and
        // stat -w still answer from the segment, and say the heartbeat is getting old.
        kill(mount.daemonPID, SIGSTOP)
        let stopped = try Binaries.run("hammer2", ["ktrdump", "-n", "3", mount.mountpoint.path])
        sleep(2)
        let stale = try Binaries.run("hammer2", ["stat", "-w", "-n", "1", mount.mountpoint.path])
        kill(mount.daemonPID, SIGCONT)
        XCTAssertEqual(stopped.status, 0, stopped.stderr)
        XCTAssertEqual(stopped.stdout.split(separator: "\n").filter { !$0.hasPrefix("#") }.count, 3)
        XCTAssertEqual(stale.status, 0, stale.stderr)
        let age = stale.stdout.components(separatedBy: "heartbeat ").last?.split(separator: " ").first.flatMap { Double($0) }
        XCTAssertGreaterThanOrEqual(age ?? 0, 1.0, "the stopped daemon's heartbeat ages: \(stale.stdout.prefix(200))")

        // Killed: the file stays, and reads the same as before the kill.
        let before = reader.events().count
        mount.kill()
        while !mount.isStopped { usleep(10_000) }
        try mount.unmount()
        XCTAssertTrue(FileManager.default.fileExists(atPath: segment), "a killed daemon leaves its segment")
        let dead = try Binaries.run("hammer2", ["ktrdump", segment])
        XCTAssertEqual(dead.status, 0, dead.stderr)
        XCTAssertTrue(dead.stdout.contains("pid \(mount.daemonPID) gone"), dead.stdout.prefix(300).description)
        XCTAssertTrue(dead.stdout.contains("flush.end "))
        XCTAssertGreaterThanOrEqual(try TraceReader(path: segment).events().count, before)
        XCTAssertEqual(try TraceReader(path: segment).statistics("pfs.DATA")?["write_bytes"], pfs["write_bytes"])
        unlink(segment)
    }

    /// A reader polling the FUSE statistics while four threads hammer the mount: every copy
    /// it gets is whole — each operation's latency histogram sums to its request count,
    /// both changed in one update — and the counts it sees only grow.
    func testAReaderUnderHeavyLoadNeverSeesATornUpdate() throws {
        let mount = try MountedImage("\(image)@DATA", options: ["-o", "rw,nowriteback"])
        let reader = try TraceReader(path: TraceFiles.defaultPath(pid: mount.daemonPID))
        let stop = Atomic<Bool>(false)
        let workers = DispatchGroup()
        for t in 0..<4 {
            workers.enter()
            Thread { [mountpoint = mount.mountpoint.path] in
                var random = SplitMix64(seed: UInt64(t))
                let path = "\(mountpoint)/load\(t)"
                let fd = open(path, O_CREAT | O_RDWR, 0o644)
                var buffer = [UInt8](repeating: 0, count: 4096)
                while !stop.load(ordering: .relaxed) {
                    let block = off_t(random.next() % 256) * 4096
                    let data = random.bytes(4096)
                    _ = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, 4096, block) }
                    _ = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 4096, block) }
                    var st = stat()
                    _ = stat(path, &st)
                }
                close(fd)
                workers.leave()
            }.start()
        }
        var reads = 0, torn = 0
        var last: [String: UInt64] = [:]
        var grew = 0
        let deadline = Date().addingTimeInterval(3)
        while Date() < deadline {
            guard let fuse = reader.statistics("fuse") else { continue }
            reads += 1
            for op in ["write", "read", "getattr", "lookup"] {
                let requests = fuse["\(op).requests"] ?? 0
                let buckets = (0..<TraceSession.latencyBuckets).reduce(UInt64(0)) { $0 + (fuse["\(op).latency[\($1)]"] ?? 0) }
                if buckets != requests { torn += 1 }
                if requests < last[op] ?? 0 { torn += 1 }
                if requests > last[op] ?? 0 { grew += 1 }
                last[op] = requests
            }
        }
        stop.store(true, ordering: .relaxed)
        workers.wait()
        XCTAssertGreaterThan(reads, 100)
        XCTAssertGreaterThan(grew, 20, "the load ran while the reader read")
        XCTAssertEqual(torn, 0, "torn or going-back copies among \(reads)")
        XCTAssertGreaterThan(last["write"] ?? 0, 100)
        try mount.unmount()
    }

    func testMaskChangesAtRunTimeAndBadTraceOptionsAreRefused() throws {
        let mount = try MountedImage("\(image)@DATA", options: ["-o", "rw,ktrmask=io:flush"])
        let path = mount.mountpoint.path
        let segment = TraceFiles.defaultPath(pid: mount.daemonPID)
        func eventNames() throws -> [String] {
            let reader = try TraceReader(path: segment)
            let catalog = reader.catalog()
            return reader.events().map { catalog.events[$0.event]?.name ?? "?" }
        }
        write(path + "/a", [UInt8](repeating: 1, count: 8192))
        XCTAssertTrue(try eventNames().contains("flush.log"), "the fsync's intent-log commit")
        XCTAssertFalse(try eventNames().contains { $0.hasPrefix("fuse.") }, "fuse is masked off at mount")
        var result = try Binaries.run("hammer2", ["ktrmask", path])
        XCTAssertEqual(result.stdout.split(separator: " ").last.map(String.init), "io,flush\n")

        result = try Binaries.run("hammer2", ["ktrmask", path, "+fuse"])
        XCTAssertEqual(result.status, 0, result.stderr)
        write(path + "/b", [UInt8](repeating: 2, count: 8192))
        XCTAssertTrue(try eventNames().contains("fuse.create"), "fuse turned on while mounted")

        result = try Binaries.run("hammer2", ["ktrmask", path, "none"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let count = try TraceReader(path: segment).events().count
        write(path + "/c", [UInt8](repeating: 3, count: 8192))
        XCTAssertEqual(try TraceReader(path: segment).events().count, count, "nothing recorded with the mask at none")

        // ktrdump -f prints what happens after it started.
        XCTAssertEqual(try Binaries.run("hammer2", ["ktrmask", path, "all"]).status, 0)
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("ktrdump-f-\(getpid()).out")
        FileManager.default.createFile(atPath: output.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: output) }
        let follower = Process()
        follower.executableURL = URL(fileURLWithPath: try Binaries.path("hammer2"))
        follower.arguments = ["ktrdump", "-f", "-m", "fuse", path]
        follower.standardOutput = try FileHandle(forWritingTo: output)
        try follower.run()
        usleep(300_000)
        write(path + "/followed", [UInt8](repeating: 4, count: 100))
        var followed = ""
        for _ in 0..<50 where !followed.contains("fuse.create") {
            usleep(100_000)
            followed = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
        }
        follower.terminate()
        follower.waitUntilExit()
        XCTAssertTrue(followed.contains("fuse.create              parent=1"), followed)
        XCTAssertTrue(followed.contains("fuse.fsync.done"), followed)

        XCTAssertEqual(try Binaries.run("hammer2", ["ktrmask", path, "bogus"]).status, 2)
        XCTAssertEqual(try Binaries.run("hammer2", ["ktrdump", "-m", "bogus", path]).status, 2)
        XCTAssertEqual(try Binaries.run("hammer2", ["ktrdump", "/nonexistent/mount"]).status, 1)
        try mount.unmount()
        XCTAssertFalse(FileManager.default.fileExists(atPath: segment), "a clean unmount removes the segment")

        // -o ktr=PATH: the segment there, kept after a clean unmount, read by its path.
        let chosen = FileManager.default.temporaryDirectory.appendingPathComponent("chosen-\(getpid()).ktr").path
        defer { unlink(chosen) }
        let kept = try MountedImage("\(image)@DATA", options: ["-o", "rw,ktr=\(chosen)"])
        write(kept.mountpoint.path + "/d", [UInt8](repeating: 5, count: 4096))
        try kept.unmount()
        let keptDump = try Binaries.run("hammer2", ["ktrdump", "-m", "flush", chosen])
        XCTAssertEqual(keptDump.status, 0, keptDump.stderr)
        XCTAssertTrue(keptDump.stdout.contains("flush.end"), keptDump.stdout)
        var st = stat()
        XCTAssertEqual(stat(chosen, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600, "a segment is its owner's only")

        // -o noktr: no segment; a bad ktrmask= is a usage error.
        let quiet = try MountedImage("\(image)@DATA", options: ["-o", "rw,noktr"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: TraceFiles.defaultPath(pid: quiet.daemonPID)))
        XCTAssertEqual(try Binaries.run("hammer2", ["ktrdump", quiet.mountpoint.path]).status, 1)
        try quiet.unmount()
        XCTAssertEqual(try Binaries.run("mount_hammer2", ["-f", "-o", "ktrmask=bogus", "\(image)@DATA", "/tmp"]).status, 2)
        XCTAssertEqual(try Binaries.run("mount_hammer2", ["-f", "-o", "ktr=", "\(image)@DATA", "/tmp"]).status, 2)
        // A segment that cannot be made never stops the mount: a warning, and no tracing.
        let untraced = try MountedImage("\(image)@DATA", options: ["-o", "rw,ktr=/nonexistent-dir/x.ktr"])
        write(untraced.mountpoint.path + "/e", [UInt8](repeating: 6, count: 4096))
        try untraced.unmount()
        XCTAssertTrue(untraced.log.contains("warning: no trace segment"), untraced.log)
        // ktrdump on a file that is not a segment says so.
        let notSegment = try Binaries.run("hammer2", ["ktrdump", image])
        XCTAssertEqual(notSegment.status, 1)
        XCTAssertTrue(notSegment.stderr.contains("not a hammer2 trace segment"), notSegment.stderr)
    }

    /// Issue 18, item 1: a local user plants symbolic links under the names the next
    /// daemons will use (hammer2.<pid>.ktr in /dev/shm, where everyone may create files);
    /// a root daemon must neither follow them nor give up tracing, and a segment its owner
    /// truncates must not kill it.
    func testPlantedLinksAreNotFollowedAndATruncatedSegmentDoesNotKillTheDaemon() throws {
        let victim = FileManager.default.temporaryDirectory.appendingPathComponent("ktr-victim-\(getpid())").path
        let precious = Data(String(repeating: "root's file that must not change\n", count: 100).utf8)
        FileManager.default.createFile(atPath: victim, contents: precious)
        defer { unlink(victim) }
        let last = Int32((try? String(contentsOfFile: "/proc/sys/kernel/ns_last_pid", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? getpid()
        var planted: [String] = []
        for pid in (last + 1)...(last + 400) {
            let name = TraceFiles.defaultPath(pid: pid)
            if symlink(victim, name) == 0 {
                planted.append(name)
                _ = lchown(name, 65534, 65534)  // as a local user would own them
            }
        }
        defer { for name in planted { unlink(name) } }
        XCTAssertGreaterThan(planted.count, 300)

        let mount = try MountedImage("\(image)@DATA", options: ["-o", "rw"])
        write(mount.mountpoint.path + "/file", [UInt8](repeating: 7, count: 65536))
        XCTAssertEqual(FileManager.default.contents(atPath: victim), precious, "the planted link's target is untouched")
        let stat = try Binaries.run("hammer2", ["stat", mount.mountpoint.path])
        XCTAssertEqual(stat.status, 0, "the daemon traces under a fresh name: \(stat.stderr)")
        let segments = TraceFiles.segments().filter { (try? TraceReader(path: $0.path))?.writerPID == mount.daemonPID }
        XCTAssertEqual(segments.count, 1)
        let segment = try XCTUnwrap(segments.first?.path)
        XCTAssertTrue(planted.contains(TraceFiles.defaultPath(pid: mount.daemonPID)), "the daemon's own name was planted")
        XCTAssertNotEqual(segment, TraceFiles.defaultPath(pid: mount.daemonPID))
        var st = Glibc.stat()
        XCTAssertEqual(lstat(segment, &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFREG, "a file of its own at \(segment)")

        // The segment's owner truncates it under the running daemon: it keeps serving.
        XCTAssertEqual(truncate(segment, 4096), 0)
        for i in 0..<20 { write(mount.mountpoint.path + "/after-\(i)", [UInt8](repeating: UInt8(i), count: 20000)) }
        usleep(1_500_000)  // a heartbeat
        XCTAssertEqual(FileManager.default.contents(atPath: mount.mountpoint.path + "/after-19"), Data(repeating: 19, count: 20000))
        XCTAssertFalse(mount.isStopped, "no SIGBUS")
        XCTAssertEqual(try mount.unmount(), 0)
        XCTAssertTrue(mount.log.contains("was truncated by someone"), mount.log)
        XCTAssertEqual(FileManager.default.contents(atPath: victim), precious)
    }
}
