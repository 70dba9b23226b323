// A seeded random mix of operations through the engine against a plain in-memory model,
// with flushes at random points and reopenings of the image: after each reopening the
// filesystem must hold exactly what the model says, and fsck must pass.

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class RandomOperationsTests: XCTestCase {
    /// The model: path -> file contents (nil for a directory).
    typealias Model = [String: [UInt8]?]

    func testRandomOperationsMatchAModelAcrossFlushesAndReopens() throws {
        let image = FileManager.default.temporaryDirectory.appendingPathComponent("h2-random-ops-\(getpid()).img").path
        defer { try? FileManager.default.removeItem(atPath: image) }
        FileManager.default.createFile(atPath: image, contents: nil)
        XCTAssertEqual(truncate(image, 1 << 30), 0)
        _ = try Formatter.format(device: FileBlockDevice(path: image, writable: true), options: FormatOptions(labels: ["DATA"]))

        // HAMMER2_RANDOM_SEED picks another sequence (for hunting bugs by hand).
        var random = SplitMix64(seed: UInt64(ProcessInfo.processInfo.environment["HAMMER2_RANDOM_SEED"] ?? "") ?? 41)
        var model: Model = ["": nil]
        let caller = Caller(uid: 0, gid: 0)
        for session in 0..<4 {
            let pfs = try MutableFilesystem(paths: [image], writable: true).openPFS("DATA")
            try compare(pfs, model, "session \(session) start")
            func resolve(_ path: String) throws -> UInt64 {
                var inum = PFSHandle.rootInodeNumber
                for part in path.split(separator: "/") { inum = try pfs.lookup(inum, Array(part.utf8)).meta.inum }
                return inum
            }
            func isDirectory(_ path: String) -> Bool {
                guard let value = model[path] else { return false }
                return value == nil
            }
            func parts(_ path: String) -> (String, String) {
                guard let slash = path.lastIndex(of: "/") else { return ("", path) }
                return (String(path[..<slash]), String(path[path.index(after: slash)...]))
            }
            for step in 0..<400 {
                let dirs = model.filter { $0.value == nil }.keys.sorted()
                let files = model.filter { $0.value != nil }.keys.sorted()
                let dir = dirs[Int(random.next() % UInt64(dirs.count))]
                let name = "n\(random.next() % 60)"
                let path = dir.isEmpty ? name : dir + "/" + name
                switch random.next() % 10 {
                case 0, 1, 2:  // create or overwrite a range
                    let size = Int(random.next() % 3 == 0 ? random.next() % 300_000 : random.next() % 2000)
                    let offset = Int(random.next() % 100_000)
                    let bytes = random.next() % 2 == 0 ? random.bytes(size) : [UInt8](repeating: UInt8(step % 7), count: size)
                    if isDirectory(path) { continue }
                    if !model.keys.contains(path) {
                        _ = try pfs.create(in: try resolve(dir), name: Array(name.utf8), type: .regularFile, mode: 0o644, caller: caller)
                        model[path] = .some([])
                    }
                    _ = try bytes.withUnsafeBytes { try pfs.write(try resolve(path), offset: UInt64(offset), $0) }
                    var content = model[path]!!
                    if content.count < offset + size { content += [UInt8](repeating: 0, count: offset + size - content.count) }
                    content.replaceSubrange(offset..<offset + size, with: bytes)
                    model[path] = .some(content)
                case 3:  // truncate
                    guard let file = files.randomElement(using: &random) else { continue }
                    let size = Int(random.next() % 200_000)
                    _ = try pfs.setAttributes(try resolve(file), AttributeChanges(size: UInt64(size)))
                    var content = model[file]!!
                    if size < content.count { content.removeLast(content.count - size) } else {
                        content += [UInt8](repeating: 0, count: size - content.count)
                    }
                    model[file] = .some(content)
                case 4:  // mkdir
                    guard !model.keys.contains(path), dir.split(separator: "/").count < 4 else { continue }
                    _ = try pfs.create(in: try resolve(dir), name: Array(name.utf8), type: .directory, mode: 0o755, caller: caller)
                    model[path] = .some(nil)
                case 5:  // unlink
                    guard let file = files.randomElement(using: &random) else { continue }
                    let (parent, leaf) = parts(file)
                    try pfs.unlink(in: try resolve(parent), name: Array(leaf.utf8))
                    model[file] = nil
                case 6:  // rename a file (possibly over another file)
                    guard let file = files.randomElement(using: &random), file != path, !isDirectory(path) else { continue }
                    let (parent, leaf) = parts(file)
                    try pfs.rename(from: try resolve(parent), name: Array(leaf.utf8), to: try resolve(dir), newName: Array(name.utf8))
                    model[path] = model[file]!
                    model[file] = nil
                case 7:  // rmdir of an empty directory
                    guard let victim = dirs.filter({ d in !d.isEmpty && !model.keys.contains { $0.hasPrefix(d + "/") } }).randomElement(using: &random) else { continue }
                    let (parent, leaf) = parts(victim)
                    try pfs.removeDirectory(in: try resolve(parent), name: Array(leaf.utf8))
                    model[victim] = nil
                default:
                    if random.next() % 4 == 0 { try pfs.flush() }
                }
            }
            try compare(pfs, model, "session \(session) end")
            try pfs.flush()
        }
        let fsck = try Binaries.run("fsck_hammer2", [image])
        XCTAssertEqual(fsck.status, 0, fsck.stdout + fsck.stderr)
    }

    func compare(_ pfs: PFSHandle, _ model: Model, _ context: String) throws {
        var seen = Set<String>()
        func walk(_ inum: UInt64, _ path: String) throws {
            seen.insert(path)
            var children: [(String, UInt64, ObjectType)] = []
            try pfs.readDirectory(inum, from: 0, withAttributes: false) { entry, _ in
                children.append((String(decoding: entry.name, as: UTF8.self), entry.inum, entry.type))
                return true
            }
            for (name, child, type) in children {
                let childPath = path.isEmpty ? name : path + "/" + name
                if type == .directory {
                    try walk(child, childPath)
                } else {
                    seen.insert(childPath)
                    let size = Int(try pfs.attributes(child).meta.size)
                    let content = try pfs.read(child, offset: 0, count: size)
                    XCTAssertEqual(content.count, model[childPath]??.count, "\(context): size of \(childPath)")
                    XCTAssertTrue(content == model[childPath]??.map { $0 } ?? [], "\(context): content of \(childPath)")
                }
            }
        }
        try walk(PFSHandle.rootInodeNumber, "")
        XCTAssertEqual(seen, Set(model.keys), "\(context): the set of names")
    }
}
