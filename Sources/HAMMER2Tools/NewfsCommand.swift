// newfs_hammer2: creates a HAMMER2 filesystem with DragonFly's options and layout (see
// Formatter). On an image path that does not exist yet, -s creates a sparse file.

import Foundation
import HAMMER2Encryption
import Glibc
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format

public enum NewfsCommand {
    public static let usage = """
    usage: newfs_hammer2 [-b bootsize] [-r auxsize] [-V version] [-L label ...] [-s size] [-c copies]
                         [-e] [-k keyfile] [-w log2N] [-F] special ...

    Creates a HAMMER2 filesystem on an image file or block device, or on several as one
    volume set (mount them as dev1:dev2:...@LABEL): the LOCAL PFS and,
    unless -L none, one PFS per -L label (default: BOOT if the device name ends in
    'a', ROOT if in 'd', otherwise DATA). New PFSes use LZ4 compression and xxhash64
    check codes.

      -b bootsize   boot area size (8M..256M, a multiple of 8M)
      -r auxsize    aux area size (8M..1G, a multiple of 8M)
      -V version    volume version, 1 or 2 (default 2)
      -L label      PFS label; repeatable, at most 3; "none" for LOCAL only
      -s size       filesystem size (k, m, g, t suffixes); creates the image file
                    (mode 0600: the image holds every file's data);
                    with several specials, the size of each one that does not exist
      -c copies     copies of every PFS's data, 1-4 (3 with -e); metadata gets one
                    more, placed on other volumes when there are several
                    (docs/copies.md; makes a volume DragonFly refuses, version 5)
      -e            encrypt the -L PFSes (not LOCAL): passphrase asked twice, or read
                    from standard input when it is not a terminal (docs/encryption.md)
      -k keyfile    encrypt the -L PFSes with a key file (at least 32 bytes) instead
                    of a passphrase
      -w log2N      scrypt cost of the passphrase: N = 2^log2N (14-21, default 18:
                    256 MiB and about 0.7 s per unlock)
      -F            accept a passphrase shorter than 12 bytes
      --help        this text; --version: the release

    Exit status: 0 created, 1 the device could not be formatted, 2 bad command line.
    """

    /// "512m", "2g", "1048576": bytes.
    static func parseSize(_ text: String) -> UInt64? {
        let lower = text.lowercased()
        let multipliers: [Character: UInt64] = ["k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40]
        var digits = Substring(lower)
        var multiplier: UInt64 = 1
        if let last = lower.last, let m = multipliers[last] {
            multiplier = m
            digits = digits.dropLast()
        }
        guard let value = UInt64(digits), value > 0 else { return nil }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : bytes
    }

    public static func main(_ arguments: [String]) -> Int32 {
        let tool = "newfs_hammer2"
        let parsed: GetOpt
        do { parsed = try GetOpt(arguments, spec: "b:r:V:L:s:dek:c:w:F") } catch {
            return usageError(tool, "\(error)", usage: usage)
        }
        if parsed.wantsHelp { print(usage); return ExitCode.success.rawValue }
        if parsed.wantsVersion { print(Release.versionLine("newfs_hammer2")); return ExitCode.success.rawValue }
        var labels: [String] = []
        var noLabel = false
        var options = FormatOptions(labels: [])
        var encrypted = false
        var keyFile: String?
        var copies = 1
        var scryptCost = KeyRecord.defaultLog2N, allowShort = false
        for (letter, value) in parsed.options {
            let value = value ?? ""
            switch letter {
            case "e": encrypted = true
            case "F": allowShort = true
            case "w":
                do { scryptCost = try KeyInput.scryptCost(value) } catch { return usageError(tool, "\(error)", usage: usage) }
            case "c":
                guard let number = Int(value), (1...HAMMER2.maximumCopies).contains(number) else {
                    return usageError(tool, "bad -c copies \"\(value)\" (1 to \(HAMMER2.maximumCopies))", usage: usage)
                }
                copies = number
            case "k":
                encrypted = true
                keyFile = value
            case "b", "r":
                guard let bytes = parseSize(value), bytes % (8 << 20) == 0,
                      bytes >= 8 << 20, bytes <= (letter == "b" ? 256 << 20 : 1 << 30) else {
                    return usageError(tool, "bad -\(letter) size \"\(value)\" (a multiple of 8M, at most \(letter == "b" ? "256M" : "1G"))", usage: usage)
                }
                if letter == "b" { options.bootAreaBytes = bytes } else { options.auxAreaBytes = bytes }
            case "V":
                guard let version = UInt32(value), version >= 1, version <= 2 else {
                    return usageError(tool, "bad -V version \"\(value)\" (1 or 2)", usage: usage)
                }
                options.version = version
            case "L":
                if value.lowercased() == "none" { noLabel = true } else { labels.append(value) }
            case "s":
                guard let bytes = parseSize(value) else { return usageError(tool, "bad -s size \"\(value)\"", usage: usage) }
                options.size = bytes
            default:
                break
            }
        }
        guard !parsed.operands.isEmpty else {
            return usageError(tool, "missing special (image file or device)", usage: usage)
        }
        guard parsed.operands.count <= HAMMER2.maxVolumes else {
            return usageError(tool, "at most \(HAMMER2.maxVolumes) volumes", usage: usage)
        }
        let specials = parsed.operands
        let special = specials[0]
        guard labels.count <= 3 else { return usageError(tool, "at most 3 labels besides LOCAL", usage: usage) }
        options.labels = noLabel ? [] : (labels.isEmpty ? [FormatOptions.defaultLabel(forDevice: special)] : labels)
        if noLabel && !labels.isEmpty { return usageError(tool, "-L none cannot be combined with other labels", usage: usage) }
        if encrypted && options.labels.isEmpty { return usageError(tool, "-e needs a PFS to encrypt (not -L none)", usage: usage) }
        if encrypted && copies > Blockref.copyCapacity(.xaes256gcm) {
            return usageError(tool, "at most \(Blockref.copyCapacity(.xaes256gcm)) copies with -e (the check area holds the nonce and tag)", usage: usage)
        }
        if specials.count > 1 && options.version < HAMMER2.volumeVersionMultiVolumes {
            return usageError(tool, "several volumes need -V 2", usage: usage)
        }
        if encrypted, let long = options.labels.first(where: { $0.utf8.count >= 128 }) {
            return usageError(tool, "label \(long) is too long for an encrypted PFS (at most 127 bytes)", usage: usage)
        }
        var keySource: KeySource?
        if encrypted {
            do {
                keySource = try KeyInput.source(keyFile: keyFile, prompt: "Passphrase for the new PFSes: ", confirm: true,
                                                allowShort: allowShort)
            } catch {
                printError(tool, "\(error)")
                return ExitCode.failure.rawValue
            }
        }

        for special in specials where !FileManager.default.fileExists(atPath: special) {
            guard let size = options.size else {
                printError(tool, "\(special): no such file (give -s SIZE to create an image file)")
                return ExitCode.failure.rawValue
            }
            // Owner-only: whoever reads the image reads every file of its clear PFSes.
            let fd = open(special, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0, ftruncate(fd, off_t(size)) == 0 else {
                printError(tool, "\(special): cannot create: \(String(cString: strerror(errno)))")
                return ExitCode.failure.rawValue
            }
            close(fd)
        }
        // With several specials -s sized each new image; the filesystem takes them whole.
        if specials.count > 1 { options.size = nil }
        for special in specials {
            if let mountpoint = mountedFilesystem(source: special) {
                printError(tool, "\(special) is mounted on \(mountpoint)")
                return ExitCode.failure.rawValue
            }
        }
        guard Set(specials).count == specials.count else {
            return usageError(tool, "a special is given twice", usage: usage)
        }
        do {
            let devices = try specials.map { try FileBlockDevice(path: $0, writable: true) }
            let result = try Formatter.format(devices: devices, options: options)
            let volumes = try VolumeSet(devices: devices)
            for volume in volumes.volumes {
                print("Volume \(volume.device.name) size \(formatSize(volume.size))")
            }
            print("---------------------------------------------")
            // Encrypted PFSes and copies raise the version DragonFly would mount (docs/).
            let version = copies > 1 ? HAMMER2.volumeVersionCopies : keySource != nil ? HAMMER2.volumeVersionEncryption : options.version
            print("version:          \(version)")
            print("total-size:       \(formatSize(result.volumeSize)) (\(result.volumeSize) bytes)")
            print("boot-area-size:   \(formatSize(result.bootAreaBytes))")
            print("aux-area-size:    \(formatSize(result.auxAreaBytes))")
            print("topo-reserved:    \(formatSize(result.volumeSize - result.bootAreaBytes - result.auxAreaBytes - result.freeBytes))")
            print("free-space:       \(formatSize(result.freeBytes))")
            print("fsid:             \(result.fsid)")
            if keySource != nil || copies > 1 {
                let filesystem = try MutableFilesystem(volumes: volumes, readOnly: false)
                filesystem.keyDerivationCost = scryptCost
                if let keySource {
                    for label in options.labels { try filesystem.encryptEmptyPFS(label, source: keySource) }
                }
                if copies > 1 {
                    for label in result.labels { try filesystem.setDefaultCopies(label, copies) }
                }
            }
            for label in result.labels {
                print("PFS \"\(label)\"" + (keySource != nil && options.labels.contains(label) ? " (encrypted)" : "")
                      + (copies > 1 ? " (\(copies) copies)" : ""))
            }
            return ExitCode.success.rawValue
        } catch {
            printError(tool, "\(special): \(error)")
            return ExitCode.failure.rawValue
        }
    }

    static func formatSize(_ bytes: UInt64) -> String {
        let units: [(UInt64, String)] = [(1 << 40, "TB"), (1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "KB")]
        for (unit, name) in units where bytes >= unit {
            return String(format: "%6.2f%@", Double(bytes) / Double(unit), name)
        }
        return "\(bytes)B"
    }
}
