// hammer2 key-status and key-change: the encryption facts of each PFS, and rewrapping a
// PFS's master key under a new passphrase or key file, in every root that holds it (its
// snapshots too), erasing the old wrapping's stale copies. Blocks are not re-encrypted.

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Encryption
import HAMMER2Engine

enum KeyDirectives {
    /// The image behind -f, or behind the mount -s/the current directory is on.
    static func image(_ image: String?, selected: String?) throws -> String {
        if let image { return image }
        let path = selected ?? "."
        guard let mount = mountedFilesystem(containing: path) else {
            throw ToolError.failed("'\(path)' is not on a hammer2 mount (use -f IMAGE)")
        }
        return String(mount.source.split(separator: "@").first ?? "")
    }

    /// key-status [label...]: every PFS (or those named): encrypted or not, key id, wrapping.
    static func status(_ operands: [String], image: String?, selected: String?) throws -> Int32 {
        let devices = try Self.image(image, selected: selected).split(separator: ":").map(String.init)
        let filesystem = try MutableFilesystem(paths: devices, writable: false)
        let labels = operands.isEmpty ? try filesystem.pfsLabels().sorted() : operands
        for label in labels {
            guard let record = try filesystem.encryptionStatus(label) else {
                print("\(label)\tnot encrypted")
                continue
            }
            let wrapping = record.wrapping == .passphrase
                ? "passphrase (scrypt N=2^\(record.scryptLog2N) r=\(record.scryptR) p=\(record.scryptP))" : "key file"
            print("\(label)\tencrypted\tXAES-256-GCM\tkey \(String(format: "%08x", record.keyID))\t\(wrapping)")
        }
        return 0
    }

    /// key-change [-o old-keyfile] [-k new-keyfile] [-w log2N] [-F] label (offline: -f IMAGE).
    static func change(_ arguments: [String], image: String?, selected: String?) throws -> Int32 {
        let parsed: GetOpt
        do { parsed = try GetOpt(arguments, spec: "o:k:w:F") } catch { throw ToolError.usage("key-change: \(error)") }
        guard parsed.operands.count == 1 else { throw ToolError.usage("key-change: requires the PFS label") }
        guard let image else {
            throw ToolError.failed("key-change: give the image (-f IMAGE) of an unmounted volume")
        }
        let label = parsed.operands[0]
        var oldFile: String?, newFile: String?
        var scryptCost = KeyRecord.defaultLog2N, allowShort = false
        for (letter, value) in parsed.options {
            switch letter {
            case "o": oldFile = value
            case "k": newFile = value
            case "w": scryptCost = try KeyInput.scryptCost(value)
            case "F": allowShort = true
            default: break
            }
        }
        let filesystem = try PFSDirectives.offline(image)
        filesystem.keyDerivationCost = scryptCost
        guard try filesystem.encryptionStatus(label) != nil else { throw ToolError.failed("PFS \(label) is not encrypted") }
        let old = try KeyInput.source(keyFile: oldFile, prompt: "Current passphrase for \(label): ")
        let new = try KeyInput.source(keyFile: newFile, prompt: "New passphrase for \(label): ", confirm: true, allowShort: allowShort)
        let progress = ScanRequest.ProgressLine(quiet: false)
        let erasure = try filesystem.changeKey(label, old: old, new: new, progress: { done, total in
            progress.show("erasing the old wrapping: \(done * 100 / max(total, 1))% of the media scanned")
        })
        progress.end()
        print("key of \(label) changed; \(erasure.erased) stale copies of its old key records erased")
        return 0
    }
}
