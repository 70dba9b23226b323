// Where the tools get an encrypted PFS's key: a key file (-k, -o keyfile=), or a
// passphrase typed on the terminal with echo off — or, when standard input is not a
// terminal, one line read from it (scripts: `printf 'secret\n' | mount_hammer2 ...`).
// Secrets are never echoed, logged or put on a command line.

import Foundation
import Glibc
import HAMMER2Encryption

public enum KeyInput {
    /// The key source: `keyFile`'s contents, or a passphrase (asked twice when `confirm`).
    public static func source(keyFile: String?, prompt: String, confirm: Bool = false) throws -> KeySource {
        if let keyFile {
            guard let data = FileManager.default.contents(atPath: keyFile) else {
                throw ToolError.failed("cannot read key file \(keyFile)")
            }
            guard data.count >= 32 else { throw ToolError.failed("key file \(keyFile) holds \(data.count) bytes; at least 32 are needed") }
            return .keyFile(Array(data))
        }
        let passphrase = try readPassphrase(prompt)
        guard !passphrase.isEmpty else { throw ToolError.failed("empty passphrase") }
        if confirm, isatty(STDIN_FILENO) == 1 {
            guard try readPassphrase("Repeat " + prompt.prefix(1).lowercased() + prompt.dropFirst()) == passphrase else {
                throw ToolError.failed("the passphrases differ")
            }
        }
        return .passphrase(passphrase)
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
