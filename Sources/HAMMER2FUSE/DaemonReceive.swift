// hammer2 receive onto a mounted volume: the stream goes to the volume's daemon over its
// control socket (a request line, then the stream's bytes, then the client's half-close),
// and the daemon receives it into its live filesystem beside the mounts it serves; the
// reply is one line. The socket is the daemon owner's alone (mode 0600, peer checked).

import Foundation
import Glibc
import HAMMER2CopyOnWrite

/// The request line: receive the stream that follows as snapshot `receiveLabel`.
public struct ReceiveRequest: Codable, Sendable {
    public var receiveLabel: String
    public var replace: Bool
    /// comp_algo for every received inode (receive -c); nil keeps the sender's.
    public var compression: UInt8?

    public init(receiveLabel: String, replace: Bool, compression: UInt8? = nil) {
        self.receiveLabel = receiveLabel
        self.replace = replace
        self.compression = compression
    }
}

/// The reply line.
public struct ReceiveReply: Codable, Sendable {
    public var received: Bool
    /// The summary line, or the error.
    public var message: String
    /// Whether what arrived was kept for a resume.
    public var kept: Bool
}

extension VolumeDaemon {
    /// Serves a receive request on `client` (the stream follows the request line).
    func handleReceive(_ request: ReceiveRequest, client: Int32) {
        var reply: ReceiveReply
        do {
            let summary = try filesystem.receive(label: request.receiveLabel, replace: request.replace,
                                                 compression: request.compression) { count in
                var buffer = [UInt8](repeating: 0, count: min(count, 1 << 20))
                while true {
                    let got = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
                    if got < 0 && errno == EINTR { continue }
                    guard got >= 0 else { throw StreamSocketError.read(errno) }
                    return Array(buffer.prefix(got))
                }
            }
            reply = ReceiveReply(received: true, message: "received \(summary.incremental ? "incremental" : "full") stream as "
                                 + "\(summary.label): \(summary.inodes) inodes, \(summary.dataBytes) data bytes", kept: false)
            logger("\(request.receiveLabel): " + reply.message)
        } catch let error as ReceiveError {
            var kept = false
            if case .interrupted = error { kept = true }
            reply = ReceiveReply(received: false, message: "\(error)", kept: kept)
        } catch {
            reply = ReceiveReply(received: false, message: "\(error)", kept: false)
        }
        if var data = try? JSONEncoder().encode(reply) {
            data.append(UInt8(ascii: "\n"))
            data.withUnsafeBytes { _ = Glibc.send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
        close(client)
    }

    /// The client side: sends `read`'s bytes (the stream) to the daemon of the volume whose
    /// control socket is `socketPath`; nil when no daemon listens there.
    public static func requestReceive(_ request: ReceiveRequest, socketPath: String,
                                      read: () throws -> [UInt8]) throws -> ReceiveReply? {
        guard var address = address(socketPath) else { return nil }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { return nil }
        var line = try JSONEncoder().encode(request)
        line.append(UInt8(ascii: "\n"))
        func sendAll(_ bytes: UnsafeRawBufferPointer) -> Bool {
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return false }  // the daemon stopped reading: its reply says why
                offset += n
            }
            return true
        }
        if line.withUnsafeBytes(sendAll) {
            while true {
                let chunk = try read()
                if chunk.isEmpty || !chunk.withUnsafeBytes(sendAll) { break }
            }
        }
        shutdown(fd, Int32(SHUT_WR))
        guard let answer = readLine(fd) else {
            return ReceiveReply(received: false, message: "the volume's daemon closed the connection without an answer", kept: false)
        }
        if let reply = try? JSONDecoder().decode(ReceiveReply.self, from: Data(answer)) { return reply }
        // Refused before the receive began (the volume being unmounted): the daemon's
        // general refusal.
        let refusal = try? JSONDecoder().decode(AttachReply.self, from: Data(answer))
        return ReceiveReply(received: false, message: refusal?.message ?? "an answer from the volume's daemon that cannot be read", kept: false)
    }
}

/// A read error of the stream's socket.
enum StreamSocketError: Error, CustomStringConvertible {
    case read(Int32)

    var description: String {
        switch self {
        case let .read(code): return "reading the stream: \(String(cString: strerror(code)))"
        }
    }
}
