// pfs-list and info, with the space report (-v) and as JSON (-j) for scripts: per PFS the
// bytes it references and holds alone, its data's logical and stored bytes and the
// compression ratio (as `zfs get used,logicalused,compressratio`); per volume its size,
// the free space less the reserve and what snapshots alone hold.

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format

enum SpaceDirectives {
    /// One volume as -j prints it.
    struct VolumeReport: Encodable {
        var device: String
        var size_bytes: UInt64?
        var free_bytes: UInt64?
        var reserve_bytes: UInt64?
        var snapshots_hold_bytes: UInt64?
        var pfses: [PFSReport]
    }

    struct PFSReport: Encodable {
        var label: String
        var type: String
        var cluster_id: String
        var snapshot: Bool
        var used_bytes: UInt64?
        var exclusive_bytes: UInt64?
        var logical_bytes: UInt64?
        var physical_bytes: UInt64?
        var stored_bytes: UInt64?
        var compressratio: Double?
    }

    /// The report of one volume; the space fields only with `space` (a walk of every PFS).
    static func report(_ target: Hammer2Command.Target, space: Bool) throws -> VolumeReport {
        let filesystem = try Filesystem(paths: target.devices)
        let entries = try filesystem.pfsEntries().sorted { Array($0.name.utf8).lexicographicallyPrecedes(Array($1.name.utf8)) }
        let usage = space ? try filesystem.volumeSpace() : nil
        let byLabel = Dictionary((usage?.pfses ?? []).map { ($0.label, $0) }, uniquingKeysWith: { a, _ in a })
        var volume = VolumeReport(device: target.display, size_bytes: usage?.totalBytes, free_bytes: usage?.freeBytes,
                                  reserve_bytes: usage?.reserveBytes, snapshots_hold_bytes: usage?.heldBySnapshots, pfses: [])
        for entry in entries {
            var pfs = PFSReport(label: entry.name, type: Text.pfsListType(entry.inode.meta),
                                cluster_id: entry.inode.meta.pfsClusterID.description,
                                snapshot: entry.inode.meta.pfsSubtype == PFSSubtype.snapshot)
            if let space = byLabel[entry.name] {
                pfs.used_bytes = space.referencedBytes
                pfs.exclusive_bytes = space.exclusiveBytes
                pfs.logical_bytes = space.logicalDataBytes
                pfs.physical_bytes = space.physicalDataBytes
                pfs.stored_bytes = space.storedDataBytes
                pfs.compressratio = (space.compressRatio * 100).rounded() / 100
            }
            volume.pfses.append(pfs)
        }
        return volume
    }

    static func printJSON(_ volumes: [VolumeReport]) throws {
        struct Document: Encodable { var volumes: [VolumeReport] }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        print(String(decoding: try encoder.encode(Document(volumes: volumes)), as: UTF8.self))
    }

    /// DragonFly's pfs-list columns; with the space report, Used, Exclusive, Logical,
    /// Ratio before the label, then the volume's totals.
    static func printPFSList(_ volume: VolumeReport) {
        let space = volume.size_bytes != nil
        print("Type        ClusterId (pfs_clid)                 "
              + (space ? "   Used  Exclusive    Logical  Ratio " : "") + "Label on \(volume.device)")
        for pfs in volume.pfses {
            var line = "\(Text.pad(pfs.type, 11)) \(pfs.cluster_id) "
            if space {
                line += Text.pad(Text.size(pfs.used_bytes ?? 0), 7, left: false) + " "
                    + Text.pad(Text.size(pfs.exclusive_bytes ?? 0), 10, left: false) + " "
                    + Text.pad(Text.size(pfs.logical_bytes ?? 0), 10, left: false) + " "
                    + Text.pad(String(format: "%.2fx", pfs.compressratio ?? 1), 6, left: false) + " "
            }
            print(line + pfs.label)
        }
        if space { printTotals(volume) }
    }

    /// DragonFly's info: each device and its PFS labels; with the space report, per PFS
    /// its data's logical and stored bytes and ratio, then the volume's totals.
    static func printInfo(_ volume: VolumeReport) {
        print("\(volume.device):")
        for pfs in volume.pfses {
            guard let logical = pfs.logical_bytes else { print("    \(pfs.label)"); continue }
            let stored = pfs.stored_bytes ?? 0, physical = pfs.physical_bytes ?? 0
            print("    \(pfs.label)" + (pfs.snapshot ? " (snapshot)" : ""))
            print("        used \(trim(pfs.used_bytes ?? 0)), exclusive \(trim(pfs.exclusive_bytes ?? 0))")
            print("        data \(trim(logical)) logical, \(trim(physical)) compressed"
                  + (stored != physical ? ", \(trim(stored)) with copies" : "")
                  + String(format: ", compressratio %.2fx", pfs.compressratio ?? 1))
        }
        if volume.size_bytes != nil { printTotals(volume) }
    }

    private static func printTotals(_ volume: VolumeReport) {
        print("volume \(trim(volume.size_bytes ?? 0)), free \(trim(volume.free_bytes ?? 0)) "
              + "(less the reserve of \(trim(volume.reserve_bytes ?? 0)))")
        print("snapshots hold \(trim(volume.snapshots_hold_bytes ?? 0)) that no other PFS references (freed when they are all deleted)")
    }

    private static func trim(_ bytes: UInt64) -> String { Text.size(bytes).trimmingCharacters(in: .whitespaces) }
}
