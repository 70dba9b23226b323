// Buffered standard output for tools that print a lot (show, freemap, fsck), plus the
// formatting helpers DragonFly's hammer2(8) uses: sizetostr, counttostr, time64_to_str and
// the method/type name tables.

import Foundation
import Glibc
import HAMMER2Format

public final class TextOutput {
    private var buffer: [UInt8] = []
    private let fd: Int32

    public init(fd: Int32 = STDOUT_FILENO) {
        self.fd = fd
        buffer.reserveCapacity(1 << 16)
    }

    deinit { flush() }

    public func write(_ text: String) {
        buffer.append(contentsOf: text.utf8)
        if buffer.count >= 1 << 16 { flush() }
    }

    /// DragonFly's tabprintf: `tab` spaces, then the text.
    public func tab(_ tab: Int, _ text: String) {
        if tab > 0 { buffer.append(contentsOf: repeatElement(UInt8(ascii: " "), count: tab)) }
        write(text)
    }

    public func flush() {
        var offset = 0
        while offset < buffer.count {
            let n = buffer.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 { if errno == EINTR { continue }; break }
            offset += n
        }
        buffer.removeAll(keepingCapacity: true)
    }
}

/// Text formatting shared by the tools.
public enum Text {
    public static func hex(_ value: UInt64, width: Int = 16) -> String {
        let s = String(value, radix: 16)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }

    /// printf's %-Nd / %Nd
    public static func pad(_ s: String, _ width: Int, left: Bool = true) -> String {
        guard s.count < width else { return s }
        let fill = String(repeating: " ", count: width - s.count)
        return left ? s + fill : fill + s
    }

    /// hammer2_time64_to_str: microseconds to "%d-%b-%Y %H:%M:%S" in local time.
    public static func time64(_ microseconds: UInt64) -> String {
        var seconds = time_t(microseconds / 1_000_000)
        var parts = tm()
        localtime_r(&seconds, &parts)
        var buffer = [CChar](repeating: 0, count: 64)
        let count = strftime(&buffer, buffer.count, "%d-%b-%Y %H:%M:%S", &parts)
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// sizetostr: "%6.2fB", "KB", "MB", "GB", "TB" switching at half of the next unit.
    public static func size(_ bytes: UInt64) -> String {
        let b = Double(bytes)
        if bytes < 512 { return String(format: "%6.2fB", b) }
        if bytes < 512 * 1024 { return String(format: "%6.2fKB", b / 1024) }
        if bytes < 512 * 1024 * 1024 { return String(format: "%6.2fMB", b / 1024 / 1024) }
        if bytes < 512 * 1024 * 1024 * 1024 { return String(format: "%6.2fGB", b / 1024 / 1024 / 1024) }
        return String(format: "%6.2fTB", b / 1024 / 1024 / 1024 / 1024)
    }

    /// hammer2_iptype_to_str
    public static func objectType(_ type: ObjectType) -> String {
        switch type {
        case .unknown: return "UNKNOWN"
        case .directory: return "DIR"
        case .regularFile: return "FILE"
        case .fifo: return "FIFO"
        case .characterDevice: return "CDEV"
        case .blockDevice: return "BDEV"
        case .softlink: return "SOFTLINK"
        case .socket: return "SOCKET"
        case .whiteout: return "WHITEOUT"
        default: return "ILLEGAL"
        }
    }

    static let compressionNames = ["none", "autozero", "lz4", "zlib"]
    static let checkNames = ["none", "disabled", "crc32", "xxhash64", "sha192", "freemap", "xaes256gcm"]

    /// hammer2_compmode_to_str: "lz4:default", "zlib:6", "unknown(9):default".
    public static func compressionMode(_ algo: UInt8) -> String {
        let comp = Int(algo & 15), level = Int((algo >> 4) & 15)
        let name = comp < compressionNames.count ? compressionNames[comp] : "unknown(\(comp))"
        return level == 0 ? "\(name):default" : "\(name):\(level)"
    }

    /// hammer2_checkmode_to_str: "xxhash64", "unknown(7)".
    public static func checkMode(_ algo: UInt8) -> String {
        let check = Int(algo & 15), level = Int((algo >> 4) & 15)
        let name = check < checkNames.count ? checkNames[check] : "unknown(\(check))"
        return level == 0 ? name : "\(name):\(level)"
    }

    /// The type column of pfs-list: MASTER shows its subtype (e.g. SNAPSHOT) when it has one.
    public static func pfsListType(_ meta: InodeMeta) -> String {
        if PFSType(rawValue: meta.pfsType.rawValue & 0x0F) == .master {
            return meta.pfsSubtype == PFSSubtype.none ? "MASTER" : PFSSubtype.name(meta.pfsSubtype)
        }
        return meta.pfsType.description
    }

    /// printf("%-7o")
    public static func octal(_ value: UInt32) -> String { pad(String(value, radix: 8), 7) }
}
