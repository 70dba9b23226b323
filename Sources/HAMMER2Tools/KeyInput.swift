// Where the tools get an encrypted PFS's key: a key file (-k, -o keyfile=), or a
// passphrase typed on the terminal with echo off — or, when standard input is not a
// terminal, one line read from it (scripts: `printf 'secret\n' | mount_hammer2 ...`).
// Secrets are never echoed, logged or put on a command line.

import Foundation
import Glibc
import HAMMER2Encryption

public enum KeyInput {
    /// New passphrases shorter than this are refused unless forced (-F): scrypt slows each
    /// guess, but a 4-character passphrase is still found in minutes.
    public static let minimumPassphraseBytes = 12

    /// scrypt's cost for new key records: `-w log2N` of newfs_hammer2, pfs-create and
    /// key-change, in the range KeyRecord accepts for new records.
    public static func scryptCost(_ text: String?) throws -> UInt8 {
        guard let text, let value = UInt8(text), KeyRecord.creatableLog2N.contains(value) else {
            throw ToolError.usage("-w wants log2 of scrypt's N, \(KeyRecord.creatableLog2N.lowerBound) to \(KeyRecord.creatableLog2N.upperBound) (default \(KeyRecord.defaultLog2N)), not \"\(text ?? "")\"")
        }
        return value
    }

    /// The key source: `keyFile`'s contents, or a passphrase (asked twice when `confirm`,
    /// which marks a new passphrase: then at least `minimumPassphraseBytes` unless
    /// `allowShort`).
    public static func source(keyFile: String?, prompt: String, confirm: Bool = false, allowShort: Bool = false) throws -> KeySource {
        if let keyFile {
            guard let data = FileManager.default.contents(atPath: keyFile) else {
                throw ToolError.failed("cannot read key file \(keyFile)")
            }
            guard data.count >= 32 else { throw ToolError.failed("key file \(keyFile) holds \(data.count) bytes; at least 32 are needed") }
            return .keyFile(Array(data))
        }
        let passphrase = try readPassphrase(prompt)
        guard !passphrase.isEmpty else { throw ToolError.failed("empty passphrase") }
        if confirm && !allowShort && passphrase.count < minimumPassphraseBytes {
            throw ToolError.failed("the passphrase has \(passphrase.count) bytes; at least \(minimumPassphraseBytes) are needed (-F takes a shorter one)")
        }
        if confirm, isatty(STDIN_FILENO) == 1 {
            guard try readPassphrase("Repeat " + prompt.prefix(1).lowercased() + prompt.dropFirst()) == passphrase else {
                throw ToolError.failed("the passphrases differ")
            }
        }
        return .passphrase(passphrase)
    }

    /// Whether standard input, not being a terminal, holds bytes not yet read: a passphrase
    /// piped or redirected in (`printf 'secret\n' | mount_hammer2 ...`). A mount of a PFS
    /// in clear refuses then: the caller meant to unlock an encrypted PFS, and someone who
    /// can write the image could have replaced it with a clear one that would take the
    /// caller's data in clear.
    public static func standardInputHoldsData() -> Bool {
        guard isatty(STDIN_FILENO) == 0 else { return false }
        var st = stat()
        guard fstat(STDIN_FILENO, &st) == 0 else { return false }
        switch st.st_mode & S_IFMT {
        case S_IFIFO, S_IFSOCK:
            var pending: Int32 = 0
            return ioctl(STDIN_FILENO, UInt(FIONREAD), &pending) == 0 && pending > 0
        case S_IFREG:
            let position = lseek(STDIN_FILENO, 0, SEEK_CUR)
            return position >= 0 && st.st_size > position
        default:
            return false
        }
    }

    /// One line from the terminal with echo off, or from standard input if it is no terminal.
    static func readPassphrase(_ prompt: String) throws -> [UInt8] {
        guard isatty(STDIN_FILENO) == 1 else { return readLine(fd: STDIN_FILENO) }
        let tty = open("/dev/tty", O_RDWR | O_CLOEXEC)
        let fd = tty >= 0 ? tty : STDIN_FILENO
        defer { if tty >= 0 { close(tty) } }
        _ = prompt.withCString { write(fd, $0, strlen($0)) }
        var saved = termios()
        let haveTerminal = tcgetattr(fd, &saved) == 0
        if haveTerminal {
            var quiet = saved
            quiet.c_lflag &= ~tcflag_t(ECHO)
            tcsetattr(fd, TCSAFLUSH, &quiet)
        }
        defer {
            if haveTerminal { tcsetattr(fd, TCSAFLUSH, &saved) }
            _ = write(fd, "\n", 1)
        }
        return readLine(fd: fd)
    }

    private static func readLine(fd: Int32) -> [UInt8] {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while read(fd, &byte, 1) == 1, byte != UInt8(ascii: "\n") { line.append(byte) }
        if line.last == UInt8(ascii: "\r") { line.removeLast() }
        return line
    }
}
