// hammer2 snapshot, pfs-create and pfs-delete: on a mounted filesystem they are ioctls to
// its mount_hammer2 daemon (as DragonFly's are to the kernel); offline (-f IMAGE) they open
// the image for writing.

import Foundation
import Glibc
import HAMMER2CopyOnWrite
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format

enum PFSDirectives {
    /// snapshot [path] [label] online; -f IMAGE snapshot <pfs-label> [label] offline.
    static func snapshot(_ operands: [String], image: String?, selected: String?) throws {
        if let image {
            guard (1...2).contains(operands.count) else { throw ToolError.usage("snapshot: with -f, give the PFS label and optionally the snapshot label") }
            let label = operands.count == 2 ? operands[1] : MutableFilesystem.defaultSnapshotLabel(for: operands[0])
            try offline(image).snapshot(of: operands[0], label: label)
            print("snapshot \(label) of \(operands[0]) created")
            return
        }
        guard operands.count <= 2 else { throw ToolError.usage("snapshot: too many arguments") }
        let path = operands.first ?? selected ?? "."
        let argument = ControlRequest.PFSArgument(label: operands.count == 2 ? operands[1] : "")
        let reply = try send(ControlRequest.pfsSnapshot, argument, to: path, what: "snapshot")
        print("snapshot \(reply.label) created")
    }

    /// pfs-create [-t type] [-c clid] [-n copies] [-e] [-k keyfile] [-w log2N] [-F] label
    static func create(_ arguments: [String], image: String?, selected: String?) throws {
        let parsed: GetOpt
        do { parsed = try GetOpt(arguments, spec: "t:c:ek:n:w:F") } catch { throw ToolError.usage("pfs-create: \(error)") }
        var argument = ControlRequest.PFSArgument(label: "")
        var encrypted = false
        var keyFile: String?
        var scryptCost = KeyRecord.defaultLog2N, allowShort = false
        for (letter, value) in parsed.options {
            switch letter {
            case "e": encrypted = true
            case "F": allowShort = true
            case "w": scryptCost = try KeyInput.scryptCost(value)
            case "k":
                encrypted = true
                keyFile = value
            case "t":
                guard let type = pfsType(value ?? "") else {
                    throw ToolError.usage("pfs-create: unknown PFS type \"\(value ?? "")\" (MASTER, SLAVE, SOFT_MASTER, SOFT_SLAVE, CACHE, DUMMY)")
                }
                argument.type = type
            case "n":
                guard let copies = UInt8(value ?? ""), (1...UInt8(HAMMER2.maximumCopies)).contains(copies) else {
                    throw ToolError.usage("pfs-create: -n copies must be 1 to \(HAMMER2.maximumCopies), not \"\(value ?? "")\"")
                }
                argument.copies = copies
            case "c":
                guard let clid = HAMMER2UUID(string: value ?? "") else { throw ToolError.usage("pfs-create: bad cluster id \"\(value ?? "")\"") }
                argument.clusterID = clid
            default: break
            }
        }
        guard parsed.operands.count == 1, !parsed.operands[0].isEmpty else { throw ToolError.usage("pfs-create: requires name") }
        argument.label = parsed.operands[0]
        if encrypted {
            guard let image else {
                throw ToolError.failed("pfs-create -e: give the image (-f IMAGE) of an unmounted volume; keys are not sent to a running mount")
            }
            let filesystem = try offline(image)
            filesystem.keyDerivationCost = scryptCost
            let source = try KeyInput.source(keyFile: keyFile, prompt: "Passphrase for \(argument.label): ", confirm: true,
                                             allowShort: allowShort)
            try filesystem.createPFS(label: argument.label, type: argument.type, clusterID: argument.clusterID, encryption: source,
                                     copies: max(1, Int(argument.copies)))
            print("encrypted PFS \(argument.label) created")
        } else if let image {
            try offline(image).createPFS(label: argument.label, type: argument.type, clusterID: argument.clusterID,
                                         copies: max(1, Int(argument.copies)))
        } else {
            _ = try send(ControlRequest.pfsCreate, argument, to: selected ?? ".", what: "pfs-create")
        }
    }

    static func delete(_ operands: [String], image: String?, selected: String?) throws {
        guard operands.count == 1, !operands[0].isEmpty else { throw ToolError.usage("pfs-delete: requires name") }
        if let image {
            let filesystem = try offline(image)
            if let erasure = try ScanRequest.withErasureProgress({ try filesystem.deletePFS(label: operands[0], progress: $0) }) {
                print("pfs-delete: the last PFS of its encryption root: \(erasure.erased) key record(s) erased")
            }
        } else {
            do {
                _ = try send(ControlRequest.pfsDelete, ControlRequest.PFSArgument(label: operands[0]), to: selected ?? ".", what: "pfs-delete")
            } catch let error as ToolError where "\(error)".contains(String(cString: strerror(EBUSY))) {
                throw ToolError.failed("pfs-delete: PFS \(operands[0]) is mounted; unmount it first")
            }
        }
    }

    /// DragonFly's PFS type names (hammer2_pfstype_to_str), any case.
    static func pfsType(_ name: String) -> PFSType? {
        switch name.uppercased() {
        case "MASTER": return .master
        case "SLAVE": return .slave
        case "SOFT_MASTER": return .softMaster
        case "SOFT_SLAVE": return .softSlave
        case "CACHE": return .cache
        case "DUMMY": return .dummy
        default: return nil
        }
    }

    static func offline(_ image: String) throws -> MutableFilesystem {
        let devices = image.split(separator: ":").map(String.init)
        if let mount = devices.lazy.compactMap({ mountedFilesystem(source: $0) }).first {
            throw ToolError.failed("\(image) is mounted on \(mount); run the directive on the mount (hammer2 -s \(mount) ...)")
        }
        return try MutableFilesystem(paths: devices, writable: true)
    }

    static func send(_ command: UInt32, _ argument: ControlRequest.PFSArgument, to path: String,
                     what: String) throws -> ControlRequest.PFSArgument {
        guard mountedFilesystem(containing: path) != nil else {
            throw ToolError.failed("'\(path)' is not on a hammer2 mount (use -f IMAGE for an unmounted image)")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ToolError.failed("\(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        // A snapshot holds what was written before it, as DragonFly's ioctl syncs the mount
        // first: data still in the kernel's writeback cache goes to the daemon before the
        // daemon flushes and takes the snapshot. (sync(2): Swift's Glibc has no syncfs.)
        if command == ControlRequest.pfsSnapshot { sync() }
        var buffer = argument.encoded()
        let status = buffer.withUnsafeMutableBytes { ioctl(fd, UInt(command), $0.baseAddress!) }
        guard status == 0 else { throw ToolError.failed("\(what) on \(path): \(String(cString: strerror(errno)))") }
        return ControlRequest.PFSArgument(decoding: buffer)
    }
}
