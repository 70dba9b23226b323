// Real FUSE mounts for tests: runs the built mount_hammer2 in the foreground as a child
// process, waits until the mount is live, and unmounts with fusermount3 (the way a user
// does), checking that the daemon then exits cleanly.

import Foundation
import Glibc

public enum Binaries {
    /// The directory holding the built executables (next to the test bundle).
    public static func directory() throws -> URL {
        var candidates: [URL] = []
        if let override = ProcessInfo.processInfo.environment["HAMMER2_BIN_DIR"] {
            candidates.append(URL(fileURLWithPath: override))
        }
        candidates.append(URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent())
        candidates.append(Fixtures.packageRoot.appendingPathComponent(".build/debug"))
        for candidate in candidates
        where FileManager.default.isExecutableFile(atPath: candidate.appendingPathComponent("mount_hammer2").path) {
            return candidate
        }
        throw MountError.binaryNotFound(candidates.map(\.path))
    }

    public static func path(_ name: String) throws -> String {
        try directory().appendingPathComponent(name).path
    }

    /// Runs a tool that leaves a daemon behind (mount_hammer2 without -f): output goes to
    /// a file, since the daemon may inherit pipe ends and keep them open.
    public static func runDetaching(_ name: String, _ arguments: [String], in directory: String? = nil) throws -> (status: Int32, output: String) {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("hammer2-run-\(getpid())-\(UUID().uuidString.prefix(8)).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try path(name))
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        try handle.close()
        return (process.terminationStatus, (try? String(contentsOf: log, encoding: .utf8)) ?? "")
    }

    /// Runs a tool to completion; returns its exit status, stdout and stderr. `input` is
    /// its standard input (a passphrase, for instance); /dev/null without it.
    public static func run(_ name: String, _ arguments: [String], input: String? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        try runProgram(try path(name), arguments, input: input)
    }

    /// Runs any program to completion (environment: added to ours); its exit status,
    /// stdout and stderr.
    public static func runProgram(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                                  input: String? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let inputPipe = Pipe()
        process.standardInput = input == nil ? FileHandle.nullDevice : inputPipe
        try process.run()
        if let input {
            inputPipe.fileHandleForWriting.write(Data(input.utf8))
            try inputPipe.fileHandleForWriting.close()
        }
        // Read both pipes to the end before waiting, so a large output cannot block the child.
        let group = DispatchGroup()
        nonisolated(unsafe) var errData = Data()
        group.enter()
        DispatchQueue.global().async { errData = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
    }
}

public enum MountError: Error, CustomStringConvertible {
    case binaryNotFound([String])
    case mountFailed(status: Int32, stderr: String)
    case timeout(String)

    public var description: String {
        switch self {
        case let .binaryNotFound(paths): return "mount_hammer2 not built; looked in " + paths.joined(separator: ", ")
        case let .mountFailed(status, stderr): return "mount_hammer2 exited with \(status): \(stderr)"
        case let .timeout(what): return "timed out: \(what)"
        }
    }
}

public final class MountedImage {
    public let mountpoint: URL
    let process: Process
    let stderrFile: URL
    private var unmounted = false
    private var savedLog: String?

    /// Mounts `spec` ("IMAGE@LABEL") at a fresh temporary directory: read-only unless
    /// `options` say otherwise (fixture images are shared and must not change).
    /// `input`: the daemon's standard input (a passphrase); else it inherits the caller's.
    public convenience init(_ spec: String, options: [String] = ["-o", "ro"], input: String? = nil) throws {
        try self.init(program: "mount_hammer2", arguments: options + [spec], input: input, what: spec)
    }

    /// `program -f ARGUMENTS MOUNTPOINT` (mount_unionfs, for instance) at a fresh directory.
    public init(program: String, arguments: [String], input: String? = nil, what: String) throws {
        let spec = what
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("hammer2-mnt-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        mountpoint = base
        stderrFile = base.deletingLastPathComponent().appendingPathComponent(base.lastPathComponent + ".log")
        FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
        process = Process()
        process.executableURL = URL(fileURLWithPath: try Binaries.path(program))
        process.arguments = ["-f"] + arguments + [base.path]
        process.standardError = try FileHandle(forWritingTo: stderrFile)
        process.standardOutput = FileHandle.nullDevice
        let inputPipe = Pipe()
        if input != nil { process.standardInput = inputPipe }
        try process.run()
        if let input {
            inputPipe.fileHandleForWriting.write(Data(input.utf8))
            try inputPipe.fileHandleForWriting.close()
        }
        let deadline = Date().addingTimeInterval(15)
        while !Self.isMountpoint(base.path) {
            if !process.isRunning {
                unmounted = true  // nothing to unmount at deinit
                throw MountError.mountFailed(status: process.terminationStatus, stderr: log)
            }
            guard Date() < deadline else {
                unmounted = true
                process.terminate()
                throw MountError.timeout("mount of \(spec) did not appear; log: \(log)")
            }
            usleep(20_000)
        }
    }

    deinit { try? unmount() }

    /// What the daemon wrote to stderr.
    public var log: String { savedLog ?? (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? "" }

    /// Whether /proc/self/mountinfo lists a mount at `path` (also a dead FUSE mount, which
    /// stat cannot reach).
    public static func isListedMount(_ path: String) -> Bool {
        guard let info = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return true }
        return info.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.count > 4 && fields[4] == path
        }
    }

    public static func isMountpoint(_ path: String) -> Bool {
        var own = stat(), parent = stat()
        guard stat(path, &own) == 0, stat(path + "/..", &parent) == 0 else { return false }
        return own.st_dev != parent.st_dev
    }

    /// SIGKILLs the daemon (a crash); the mount then needs a lazy unmount.
    public func kill() {
        Glibc.kill(process.processIdentifier, SIGKILL)
    }

    public var isStopped: Bool { !process.isRunning }

    public var daemonPID: pid_t { process.processIdentifier }

    /// Unmounts with fusermount3 -u and waits for the daemon; returns its exit status.
    @discardableResult
    public func unmount() throws -> Int32 {
        guard !unmounted else { return process.isRunning ? -1 : process.terminationStatus }
        unmounted = true
        // A killed daemon leaves a dead mount that only a lazy unmount removes.
        // Already gone when another mount's daemon served it, or a signal ended that daemon
        // (a dead mount is still listed, and needs the lazy unmount).
        if Self.isListedMount(mountpoint.path) {
            _ = try Fixtures.run("/usr/bin/env", ["fusermount3", "-u"] + (process.isRunning ? [] : ["-z"]) + [mountpoint.path])
        }
        let deadline = Date().addingTimeInterval(15)
        while process.isRunning {
            guard Date() < deadline else {
                process.interrupt()
                throw MountError.timeout("mount_hammer2 did not exit after unmount")
            }
            usleep(20_000)
        }
        savedLog = log
        try? FileManager.default.removeItem(at: mountpoint)
        try? FileManager.default.removeItem(at: stderrFile)
        return process.terminationStatus
    }
}
