// Mounting a PFS of a volume another mount_hammer2 already serves (issue 22): the client
// side asks that daemon over its control socket; the daemon side turns the request into a
// FUSE server with the same checks a first mount makes (key, rollback, -o encrypted).

import Foundation
import Glibc
import HAMMER2CopyOnWrite
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2FUSE
import HAMMER2Tools

/// Asks the daemon listening at `socketPath` to mount the PFS. Returns the exit status
/// when it answered (mounted, or refused), nil when no daemon listens there.
func attachToDaemon(_ base: AttachRequest, socketPath: String, devices: [String], keyFile: String?) -> Int32? {
    guard FileManager.default.fileExists(atPath: socketPath) else { return nil }
    var request = base
    do {
        // The key is read here, where the terminal is; the PFS's state comes from the last
        // flush, which is enough to know whether it is encrypted.
        if let keyFile {
            guard case let .keyFile(bytes) = try KeyInput.source(keyFile: keyFile, prompt: "") else { return nil }
            request.keyFile = bytes
        } else if let volume = try? MutableFilesystem(paths: devices, writable: false, cacheBytes: 4 << 20),
                  (try? volume.encryptionStatus(request.label)) ?? nil != nil {
            switch try KeyInput.source(keyFile: nil, prompt: "Passphrase for \(request.label): ") {
            case let .passphrase(bytes): request.passphrase = bytes
            case let .keyFile(bytes): request.keyFile = bytes
            }
        } else if KeyInput.standardInputHoldsData() {
            printError("mount_hammer2", "a passphrase waits on standard input, but PFS \(request.label) is not encrypted (if it "
                       + "should be, it was replaced); refusing to mount it (give standard input from /dev/null to mount it in clear)")
            return ExitCode.failure.rawValue
        }
    } catch {
        printError("mount_hammer2", "\(devices.joined(separator: ":"))@\(request.label): \(error)")
        return ExitCode.failure.rawValue
    }
    let deadline = Date().addingTimeInterval(30)
    while true {
        switch VolumeDaemon.requestAttach(request, socketPath: socketPath) {
        case .noDaemon:
            return nil
        case let .mounted(connection):
            guard request.follow else {
                close(connection)
                return ExitCode.success.rawValue
            }
            // In the foreground the mount lasts as long as this process; a signal ends it.
            signal(SIGINT) { _ in _exit(0) }
            signal(SIGTERM) { _ in _exit(0) }
            return VolumeDaemon.waitForEnd(connection) ? ExitCode.success.rawValue : ExitCode.failure.rawValue
        case let .failed(message):
            if message.hasPrefix("busy:") && Date() < deadline {
                usleep(100_000)  // the daemon is ending; the next one (or this process) takes it
                if !FileManager.default.fileExists(atPath: socketPath) { return nil }
                continue
            }
            printError("mount_hammer2", "\(devices.joined(separator: ":"))@\(request.label): \(message)")
            return ExitCode.failure.rawValue
        }
    }
}

/// The daemon's side: what an attach request becomes.
func attachHandler(filesystem: MutableFilesystem, devices: [String],
                   logger: @escaping @Sendable (String) -> Void) -> VolumeDaemon.Attach {
    return { request in
        let label = request.label
        if filesystem.isOpen(label) {
            throw ToolError.failed("PFS \(label) is already mounted (by this volume's daemon; a PFS mounts once)")
        }
        if try filesystem.encryptionStatus(label) != nil {
            let source: KeySource
            if let bytes = request.keyFile {
                source = .keyFile(bytes)
            } else if let bytes = request.passphrase {
                source = .passphrase(bytes)
            } else {
                throw ToolError.failed("PFS \(label) is encrypted: give keyfile= or a passphrase")
            }
            try filesystem.unlockPFS(label, source: source)
        } else if request.keyFile != nil {
            throw ToolError.failed("keyfile= given, but PFS \(label) is not encrypted (if it should be, it was replaced)")
        } else if request.requireEncryption {
            throw ToolError.failed("-o encrypted given, but PFS \(label) is not encrypted (if it should be, it was replaced)")
        }
        let pfs = try filesystem.openPFS(label)
        pfs.readOnly = request.readOnly
        var recorder: RollbackRecorder?
        do {
            if let (keys, meta) = pfs.encryptedRoot {
                recorder = try checkRollback(keys: keys, meta: meta, label: label, filesystem: filesystem,
                                             readOnly: request.readOnly, accepted: request.rollbackAccepted, logger: logger)
            }
        } catch {
            try? filesystem.closePFS(label)
            throw error
        }
        let options = request.mountOptions(fsname: devices.joined(separator: ":") + "@" + label)
        let server = FUSEServer(filesystem: filesystem, pfs: pfs, options: options, logger: logger)
        let finished = recorder
        return (server, { finished?.finish() })
    }
}
