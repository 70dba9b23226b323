// fsck_hammer2: verifies a HAMMER2 filesystem without changing it (see Verifier for what
// is checked). Output follows DragonFly's fsck_hammer2: a "volume header" phase listing
// each zone, a "freemap" and a "volume" phase with a summary line of blockref counts, and
// errors on stderr, one per damaged blockref. Our additions (namespace and freemap
// agreement) follow as their own phases.

import Foundation
import Glibc
import HAMMER2CopyOnWrite
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format

public enum FsckCommand {
    public static let usage = """
    usage: fsck_hammer2 [-f] [-v] [-q] [-e] [-b] [-p] [-P] [-l pfs_names] [-k keyfile | -K] special[:special...]

    Verifies every volume header, every reachable blockref's check code, the tree
    shape and key ranges, each PFS's directories, inodes and link counts, and that
    the freemap marks every block in use as allocated. Never writes to the image.

      -f   keep going below blocks whose check code failed
      -v   more detail      -q   no progress line
      -e   count empty blockrefs
      -b   check only the best (current) volume header's tree
      -p   report per PFS   -P   only list the PFSes
      -l   comma-separated PFS names for -p / -P
      -k   key file of encrypted PFSes: their tags and namespaces are verified too
      -K   the same with a passphrase (asked, or read from standard input)
      --help, --version    this text, the release
    Without a key, an encrypted PFS's structure (stored in clear) is checked, but
    its blocks' authentication tags and its namespace are not.

    Exit status: 0 no damage found, 1 damage found, 2 bad command line or the
    image could not be opened.
    """

    public static func main(_ arguments: [String]) -> Int32 {
        let parsed: GetOpt
        do { parsed = try GetOpt(arguments, spec: "fvqebpPl:c:dk:K") } catch {
            return usageError("fsck_hammer2", "\(error)", usage: usage)
        }
        if parsed.wantsHelp { print(usage); return ExitCode.success.rawValue }
        if parsed.wantsVersion { print(Release.versionLine("fsck_hammer2")); return ExitCode.success.rawValue }
        var verbose = 0, force = false, countEmpty = false, bestOnly = false, perPFS = false, listOnly = false
        var pfsNames: [String] = []
        var keyFile: String?, askPassphrase = false
        for (letter, value) in parsed.options {
            switch letter {
            case "k": keyFile = value
            case "K": askPassphrase = true
            case "f": force = true
            case "v": verbose += 1
            case "q": verbose -= 1
            case "e": countEmpty = true
            case "b": bestOnly = true
            case "p": perPFS = true
            case "P": listOnly = true
            case "l": pfsNames = (value ?? "").split(separator: ",").map(String.init)
            default: break
            }
        }
        guard parsed.operands.count >= 1 else {
            return usageError("fsck_hammer2", "missing special (image file or device)", usage: usage)
        }
        var keySource: KeySource?
        if keyFile != nil || askPassphrase {
            do { keySource = try KeyInput.source(keyFile: keyFile, prompt: "Passphrase: ") } catch {
                printError("fsck_hammer2", "\(error)")
                return ExitCode.usage.rawValue
            }
        }
        var status = ExitCode.success
        for (i, special) in parsed.operands.enumerated() {
            if parsed.operands.count > 1 {
                if i > 0 { print(String(repeating: "-", count: 80)) }
                print(special)
            }
            let devices = special.split(separator: ":").map(String.init)
            let volumes: VolumeSet
            do {
                volumes = try VolumeSet(paths: devices)
            } catch let error as EngineError {
                printError("fsck_hammer2", "\(special): \(error)")
                if case .io = error { return ExitCode.usage.rawValue }
                if case .invalidArgument = error { return ExitCode.usage.rawValue }
                return ExitCode.failure.rawValue
            } catch {
                printError("fsck_hammer2", "\(special): \(error)")
                return ExitCode.usage.rawValue
            }
            let run = FsckRun(volumes: volumes, verbose: verbose, force: force, countEmpty: countEmpty,
                              bestOnly: bestOnly, perPFS: perPFS, listOnly: listOnly, pfsNames: pfsNames)
            if let keySource { run.unlock(keySource) }
            if !run.run() { status = .failure }
        }
        return status.rawValue
    }
}

final class FsckRun {
    let volumes: VolumeSet
    let verbose: Int
    let force, countEmpty, bestOnly, perPFS, listOnly: Bool
    let pfsNames: [String]
    let showProgress: Bool
    var damaged = false
    /// Keys of the encrypted PFSes the given key opens.
    let keyring = Keyring()
    /// Whether a key was given (-k, -K): then an encrypted PFS it does not open is an error.
    var keyGiven = false
    /// Why the given key did not open a PFS (by key id): wrong key, or the wrong kind.
    var keyRefusals: [UInt32: String] = [:]

    /// Unwraps every encrypted PFS's key the source opens (others stay structure-only).
    func unlock(_ source: KeySource) {
        keyGiven = true
        guard let filesystem = try? Filesystem(volumes: volumes), let entries = try? filesystem.pfsEntries() else { return }
        for entry in entries {
            guard let bytes = entry.inode.keyRecord, let record = try? KeyRecord(decoding: bytes),
                  keyring.keys(for: record.keyID) == nil else { continue }
            do {
                let keys = try record.unwrap(source)
                keyring.add(keys)
                // A rekeyed PFS's older keys (its key history, sealed under the current one).
                filesystem.reader.keyring.add(keys)
                if let pfs = try? filesystem.openPFS(entry.name), pfs.rootIsAuthentic, (try? filesystem.reader.keyring.addHistory(of: pfs)) != nil {
                    filesystem.reader.keyring.copy(into: keyring)
                }
            } catch {
                keyRefusals[record.keyID] = "\(error)"
            }
        }
    }

    init(volumes: VolumeSet, verbose: Int, force: Bool, countEmpty: Bool, bestOnly: Bool, perPFS: Bool,
         listOnly: Bool, pfsNames: [String]) {
        self.volumes = volumes; self.verbose = verbose; self.force = force; self.countEmpty = countEmpty
        self.bestOnly = bestOnly; self.perPFS = perPFS; self.listOnly = listOnly; self.pfsNames = pfsNames
        self.showProgress = verbose >= 0 && standardOutputIsTerminal
    }

    func out(_ tab: Int, _ text: String) {
        print(String(repeating: " ", count: tab * 8) + text)
    }

    func err(_ tab: Int, _ text: String) {
        damaged = true
        FileHandle.standardError.write(Data((String(repeating: " ", count: tab * 8) + text + "\n").utf8))
    }

    func zoneLine(_ copy: VolumeHeaderCopy, best: Int) -> String {
        let marker = !bestOnly && copy.index == best ? " (best)" : ""
        return "zone.\(copy.index) \(Text.hex(copy.deviceOffset | 16))\(marker)"
    }

    /// Runs all phases; returns false when damage was found.
    func run() -> Bool {
        if listOnly { return listPFS() }
        let root = volumes.volumes[0]
        print("volume header")
        for volume in volumes.volumes {
            if volumes.volumes.count > 1 { out(0, "volume \(volume.id) \(volume.device.name)") }
            for copy in volume.copies where !bestOnly || copy.index == volume.headerIndex {
                out(0, zoneLine(copy, best: volume.headerIndex))
                if let problem = copy.problem { err(1, headerProblemText(problem)) }
            }
        }
        let zones = root.copies.filter { $0.header != nil && (!bestOnly || $0.index == root.headerIndex) }
        var bestVerifier: Verifier?
        print("freemap")
        for copy in zones {
            out(0, zoneLine(copy, best: root.headerIndex))
            let verifier = Verifier(volumes: volumes)
            verifier.keyring = keyring
            verifier.countEmpty = countEmpty
            verifier.force = force
            verifier.progress = progressPrinter(freemap: true)
            let (counts, problems) = verifier.verifyTree(.freemap, header: copy.header!)
            out(1, freemapStats(counts))
            problems.forEach { err(1, $0.description) }
            if copy.index == root.headerIndex { bestVerifier = verifier }
        }
        print("volume")
        var zoneVerifiers: [Verifier] = []
        for copy in zones {
            out(0, zoneLine(copy, best: root.headerIndex))
            let verifier = copy.index == root.headerIndex ? bestVerifier! : Verifier(volumes: volumes)
            verifier.keyring = keyring
            verifier.countEmpty = countEmpty
            verifier.force = force
            verifier.progress = progressPrinter(freemap: false)
            let (counts, problems) = verifier.verifyTree(.topology, header: copy.header!)
            zoneVerifiers.append(verifier)
            out(1, volumeStats(counts))
            problems.forEach { err(1, $0.description) }
        }
        namespacePhase()
        intentLogPhase(root.header)
        if let bestVerifier {
            zoneVerifiers.forEach { bestVerifier.addReferences(from: $0) }
            print("freemap agreement")
            let report = bestVerifier.verifyFreemapAgreement(header: root.header)
            out(1, "\(Text.size(report.referencedBytes).trimmingCharacters(in: .whitespaces)) referenced, "
                + "\(Text.size(report.leakedBytes).trimmingCharacters(in: .whitespaces)) allocated but unreferenced (reclaimable by bulkfree)")
            report.problems.forEach { err(1, $0.description) }
        }
        return !damaged
    }

    /// The intent log (docs/format.md, "Intent log"): commits fsync made durable after the
    /// last flush, which the next read-write mount replays. One that cannot be replayed is
    /// damage (what an fsync promised would be lost).
    func intentLogPhase(_ header: VolumeHeader) {
        print("intent log")
        let contents = IntentLogContents.read(volumes)
        if let problem = contents.problem { err(1, "cannot be replayed: \(problem)") }
        guard !contents.commits.isEmpty else {
            if contents.problem == nil { out(1, "empty: the last flush holds everything") }
            return
        }
        let filesystem = try? Filesystem(volumes: volumes)
        var labels = Set<String>()
        for (_, commit) in contents.commits { for pfs in commit.pfses { labels.insert(String(decoding: pfs.label, as: UTF8.self)) } }
        for label in labels.sorted() where (try? filesystem?.openPFS(label)) == nil {
            err(1, "commits name PFS \(label), which cannot be opened")
        }
        let base = header.superRootBlockset.first?.mirrorTID ?? 0
        out(1, "\(contents.commits.count) commits (\(contents.bytes) bytes) over transaction 0x\(String(base, radix: 16)) for "
            + labels.sorted().joined(separator: ", ") + ": replayed at the next read-write mount")
    }

    func namespacePhase() {
        print("namespace")
        let filesystem: Filesystem
        var entries: [PFSEntry] = []
        do {
            filesystem = try Filesystem(volumes: volumes)
            // Each PFS root on its own: a damaged one is reported, the others still checked.
            try filesystem.tree.forEachLeaf(in: filesystem.superRoot.blockset, from: 0, through: .max) { bref in
                guard bref.type == .inode else { return true }
                do {
                    let inode = try filesystem.reader.inode(bref)
                    entries.append(PFSEntry(name: String(decoding: inode.filename, as: UTF8.self), bref: bref, inode: inode))
                } catch {
                    err(1, "PFS root inode \(describe(bref)): \(error)")
                }
                return true
            }
            entries.sort { $0.name < $1.name }
        } catch {
            err(1, "cannot read the super-root: \(error)")
            return
        }
        let selected = entries.filter { pfsNames.isEmpty || pfsNames.contains($0.name) }
        if !pfsNames.isEmpty && selected.isEmpty { err(1, "PFS not found") }
        for entry in selected {
            do {
                if let keyID = Keyring.keyID(ofRoot: entry.inode.meta) {
                    // What a mount checks first: a key record that decodes, a key that unwraps.
                    guard let bytes = entry.inode.keyRecord else {
                        err(1, "\(entry.name): encrypted (key \(Text.hex(UInt64(keyID), width: 8))) but its root holds no key record")
                        continue
                    }
                    do { _ = try KeyRecord(decoding: bytes) } catch KeyError.badRecord(let why) {
                        err(1, "\(entry.name): damaged key record (\(why)): the PFS cannot be unlocked")
                        continue
                    } catch {
                        err(1, "\(entry.name): damaged key record (\(error)): the PFS cannot be unlocked")
                        continue
                    }
                    guard let keys = keyring.keys(for: keyID) else {
                        if keyGiven {
                            err(1, "\(entry.name): the key given does not open it (\(keyRefusals[keyID] ?? "key \(Text.hex(UInt64(keyID), width: 8))")): tags and namespace not verified")
                        } else {
                            out(1, "\(entry.name): encrypted, no key given: structure checked, tags and namespace not verified")
                        }
                        continue
                    }
                    filesystem.reader.keyring.add(keys)
                }
                // A receive that was interrupted (hammer2 receive, docs/send-receive.md) keeps
                // what arrived in a hidden PFS: entries may name inodes still to come. Its
                // blocks were checked above; its namespace is not whole yet.
                if entry.name.hasPrefix(".receive.") {
                    out(1, "\(entry.name): an interrupted receive (structure checked; namespace incomplete until it is resumed: hammer2 receive -T, -A drops it)")
                    continue
                }
                let pfs = try filesystem.openPFS(entry.name)
                if pfs.isEncrypted && !pfs.rootIsAuthentic {
                    err(1, "\(entry.name): the root inode does not match its MAC (altered or replaced): a mount refuses it")
                    continue
                }
                let verifier = Verifier(volumes: volumes)
                let report = verifier.verifyNamespace(pfs)
                var line = "\(entry.name): \(report.directories) directories, \(report.files) files, \(report.others) other"
                if report.attributeOwners > 0 { line += ", \(report.attributes) extended attributes on \(report.attributeOwners) inodes" }
                if !report.orphans.isEmpty { line += ", \(report.orphans.count) unreachable inodes (orphans)" }
                out(1, line)
                if verbose > 0 && !report.orphans.isEmpty {
                    out(2, "orphans: " + report.orphans.map { String($0) }.joined(separator: " "))
                }
                report.problems.forEach { err(1, $0.description) }
            } catch {
                err(1, "PFS \(entry.name): \(error)")
            }
        }
    }

    func listPFS() -> Bool {
        do {
            let filesystem = try Filesystem(volumes: volumes)
            for entry in try filesystem.pfsEntries().sorted(by: { $0.name < $1.name })
            where pfsNames.isEmpty || pfsNames.contains(entry.name) {
                out(1, "\(Text.pad(Text.pfsListType(entry.inode.meta), 11)) \(entry.inode.meta.pfsClusterID) \(entry.name)")
            }
        } catch {
            err(1, "Failed to read PFS blockref: \(error)")
        }
        return !damaged
    }

    func headerProblemText(_ problem: String) -> String {
        if problem.hasPrefix("bad magic") { return "Bad magic (\(problem))" }
        if problem.contains("sect0") { return "Bad HAMMER2_VOL_ICRC_SECT0 CRC" }
        if problem.contains("sect1") { return "Bad HAMMER2_VOL_ICRC_SECT1 CRC" }
        if problem.contains("mismatch vh") { return "Bad volume header CRC" }
        return problem
    }

    func volumeStats(_ c: VerifyCounts) -> String {
        let empty = countEmpty ? ", \(c.empty) empty" : ""
        let sealed = c.authenticated + c.sealedWithoutKey > 0
            ? "; encrypted: \(c.authenticated) authenticated, \(c.sealedWithoutKey) without key" : ""
        return "\(c.total) blockref (\(c.inode) inode, \(c.indirect) indirect, \(c.data) data, \(c.dirent) dirent\(empty)), \(Text.size(c.bytes))\(sealed)"
    }

    func freemapStats(_ c: VerifyCounts) -> String {
        let empty = countEmpty ? ", \(c.empty) empty" : ""
        return "\(c.total) blockref (\(c.freemapNode) node, \(c.freemapLeaf) leaf\(empty)), \(Text.size(c.bytes))"
    }

    func progressPrinter(freemap: Bool) -> ((VerifyCounts) -> Void)? {
        guard showProgress else { return nil }
        return { [self] counts in
            let line = "        " + (freemap ? freemapStats(counts) : volumeStats(counts))
            FileHandle.standardOutput.write(Data((line + "\r").utf8))
        }
    }
}
