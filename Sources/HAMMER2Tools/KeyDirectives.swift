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

    /// key-status [-k keyfile | -K] [label...]: every PFS (or those named): encrypted or not,
    /// key id, wrapping; with a key, the older keys a rekey left and re-encryption's cursor.
    static func status(_ arguments: [String], image: String?, selected: String?) throws -> Int32 {
        let parsed: GetOpt
        do { parsed = try GetOpt(arguments, spec: "k:K") } catch { throw ToolError.usage("key-status: \(error)") }
        var keyFile: String?, askPassphrase = false
        for (letter, value) in parsed.options {
            if letter == "k" { keyFile = value } else if letter == "K" { askPassphrase = true }
        }
        let devices = try Self.image(image, selected: selected).split(separator: ":").map(String.init)
        let filesystem = try MutableFilesystem(paths: devices, writable: false)
        let labels = parsed.operands.isEmpty ? try filesystem.pfsLabels().sorted() : parsed.operands
        let source = keyFile != nil || askPassphrase ? try KeyInput.source(keyFile: keyFile, prompt: "Passphrase: ") : nil
        for label in labels {
            guard let record = try filesystem.encryptionStatus(label) else {
                print("\(label)\tnot encrypted")
                continue
            }
            let wrapping = record.wrapping == .passphrase
                ? "passphrase (scrypt N=2^\(record.scryptLog2N) r=\(record.scryptR) p=\(record.scryptP))" : "key file"
            var line = "\(label)\tencrypted\tXAES-256-GCM\tkey \(String(format: "%08x", record.keyID))\t\(wrapping)"
            if let source {
                do {
                    try filesystem.unlockPFS(label, source: source)
                    let generations = try filesystem.keyGenerations(label)
                    line += generations.older.isEmpty ? "\tno older keys"
                        : "\tolder keys " + generations.older.map { String(format: "%08x", $0) }.joined(separator: ",")
                        + (generations.cursor != 0 ? " (reencrypt in progress at inode \(generations.cursor))" : " (run hammer2 reencrypt to retire them)")
                } catch {
                    line += "\t(the key given does not open it)"
                }
            }
            print(line)
        }
        return 0
    }

    /// rekey [-k keyfile] [-w log2N] label (offline: -f IMAGE): a new key for new writes.
    static func rekey(_ arguments: [String], image: String?) throws -> Int32 {
        let parsed: GetOpt
        do { parsed = try GetOpt(arguments, spec: "k:w:") } catch { throw ToolError.usage("rekey: \(error)") }
        guard parsed.operands.count == 1 else { throw ToolError.usage("rekey: requires the PFS label") }
        guard let image else { throw ToolError.failed("rekey: give the image (-f IMAGE) of an unmounted volume") }
        var keyFile: String?, cost = KeyRecord.defaultLog2N
        for (letter, value) in parsed.options {
            if letter == "k" { keyFile = value } else if letter == "w" { cost = try KeyInput.scryptCost(value) }
        }
        let label = parsed.operands[0]
        let filesystem = try PFSDirectives.offline(image)
        filesystem.keyDerivationCost = cost
        guard try filesystem.encryptionStatus(label) != nil else { throw ToolError.failed("PFS \(label) is not encrypted") }
        let source = try KeyInput.source(keyFile: keyFile, prompt: "Passphrase for \(label): ")
        let result = try ScanRequest.withErasureProgress { try filesystem.rekeyPFS(label, source: source, progress: $0) }
        print("PFS \(label) rekeyed: new writes use key \(String(format: "%08x", result.newKeyID)); key "
              + "\(String(format: "%08x", result.oldKeyID)) is kept for older blocks (hammer2 reencrypt retires it); "
              + "\(result.erasure.erased) stale key records erased")
        return 0
    }

    /// reencrypt [path] on a mount, or -f IMAGE reencrypt [-k keyfile] label offline.
    static func reencrypt(_ arguments: [String], image: String?, selected: String?, quiet: Bool) throws -> Int32 {
        let parsed: GetOpt
        do { parsed = try GetOpt(arguments, spec: "k:") } catch { throw ToolError.usage("reencrypt: \(error)") }
        let result: ReencryptionProgress
        do {
            result = try runReencryption(parsed, image: image, selected: selected, quiet: quiet)
        } catch {
            // Rewritten blocks need new space; the ones they replace come back only with
            // bulkfree. The cursor of the last flushed step is kept.
            let full = (error as? EngineError)?.errno == ENOSPC || "\(error)".contains(String(cString: strerror(ENOSPC)))
            guard full else { throw error }
            throw ToolError.failed("\(error); the blocks it replaced come back with hammer2 bulkfree: run it, then "
                                   + "reencrypt again, which goes on where it stopped")
        }
        print("reencrypt: \(result.inodes) inodes, \(result.entries) directory entries, "
              + "\(Text.size(result.bytes).trimmingCharacters(in: .whitespaces)) of file data rewritten under the current key; "
              + (result.finished ? "no older keys or older sealing left (snapshots made from now on can be sent raw)"
                                 : "stopped at inode \(result.cursor) (run it again to go on)"))
        return result.finished ? 0 : 1
    }

    static func runReencryption(_ parsed: GetOpt, image: String?, selected: String?, quiet: Bool) throws -> ReencryptionProgress {
        guard let image else {
            guard parsed.operands.count <= 1, parsed.options.isEmpty else { throw ToolError.usage("reencrypt: at most one path on a mount") }
            let reply = try ScanRequest.send(ControlRequest.reencrypt, path: parsed.operands.first ?? selected ?? ".",
                                             directive: "reencrypt", quiet: quiet)
            return ControlRequest.decodeReencryption(reply)
        }
        guard parsed.operands.count == 1 else { throw ToolError.usage("reencrypt: -f IMAGE reencrypt [-k keyfile] <label>") }
        let label = parsed.operands[0]
        let keyFile = parsed.options.first { $0.0 == "k" }?.1
        let filesystem = try ScanRequest.offlineFilesystem(image, directive: "reencrypt")
        guard try filesystem.encryptionStatus(label) != nil else { throw ToolError.failed("PFS \(label) is not encrypted") }
        try filesystem.unlockPFS(label, source: try KeyInput.source(keyFile: keyFile, prompt: "Passphrase for \(label): "))
        let progress = ScanRequest.ProgressLine(quiet: quiet)
        defer { progress.end() }
        return try filesystem.reencrypt(label) { step in
            progress.show("reencrypt: \(step.inodes) inodes, \(Text.size(step.bytes).trimmingCharacters(in: .whitespaces)) rewritten, at inode \(step.cursor)")
        }
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
        let erasure = try ScanRequest.withErasureProgress { try filesystem.changeKey(label, old: old, new: new, progress: $0) }
        print("key of \(label) changed; \(erasure.erased) stale copies of its old key records erased")
        return 0
    }
}
