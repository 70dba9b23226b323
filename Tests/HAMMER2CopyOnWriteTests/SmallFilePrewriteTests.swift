// Many small files (a tar extraction, rsync, a git checkout): the data a flush writes ahead
// without the lock goes out in batches of many files, one write per run of neighbouring
// blocks, not one write (and one wait) per file; each file keeps its own methods and the
// bytes stay right after a reopening.

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class SmallFilePrewriteTests: XCTestCase {
    let caller = Caller(uid: 0, gid: 0)

    func testSmallFilesAreWrittenInBatchesAndReadBackRight() throws {
        let device = RecordingDevice(size: (2 << 30) + (64 << 20))
        _ = try Formatter.format(device: device, options: FormatOptions(labels: ["DATA"]))
        var random = SplitMix64(seed: 2412)
        var files: [String: [UInt8]] = [:]
        do {
            let fs = try MutableFilesystem(volumes: VolumeSet(devices: [device]), readOnly: false)
            let pfs = try fs.openPFS("DATA")
            // Half the files with lz4 (text-like: compresses), half without, interleaved, so
            // that a batch holds files of both kinds.
            let compressed = try pfs.create(in: 1, name: Array("lz4".utf8), type: .directory, mode: 0o755, caller: caller).meta.inum
            let plain = try pfs.create(in: 1, name: Array("none".utf8), type: .directory, mode: 0o755, caller: caller).meta.inum
            try pfs.setMethods(compressed, compAlgo: 0x02, checkAlgo: nil)
            try pfs.setMethods(plain, compAlgo: 0x00, checkAlgo: nil)
            try pfs.flush()
            device.startRecording()
            for index in 0..<300 {
                let size = 1_000 + Int(random.next() % 20_000)
                let text = index % 2 == 0
                let bytes = text ? Array(String(repeating: "line \(index) of a small text file\n", count: size / 30 + 1).utf8.prefix(size))
                                 : random.bytes(size)
                let name = (text ? "lz4/" : "none/") + "f\(index)"
                let inum = try pfs.create(in: text ? compressed : plain, name: Array("f\(index)".utf8), type: .regularFile,
                                          mode: 0o644, caller: caller).meta.inum
                _ = try bytes.withUnsafeBytes { try pfs.write(inum, offset: 0, $0) }
                files[name] = bytes
            }
            try pfs.flush()
            // 300 files of 1-21 KiB (about 3 MiB) in 5 batches: the data goes out in merged
            // runs of neighbouring blocks (about 60 KiB each here: blocks of different sizes
            // leave gaps between them), the metadata (inodes, directory blocks, freemap,
            // header) in a few more. One write per file would be 300 and more.
            let writes = device.log.filter { if case .write = $0 { return true } else { return false } }.count
            XCTAssertLessThan(writes, 100, "device writes for 300 small files")
        }
        // Read back from what is on the device, with the methods each directory gave.
        let copy = RecordingDevice(size: device.size, pages: device.contents)
        let volumes = try VolumeSet(devices: [copy])
        XCTAssertTrue(Verifier(volumes: volumes).verifyTree(.topology, header: volumes.header).1.isEmpty)
        let pfs = try Filesystem(volumes: volumes).openPFS("DATA")
        var seen = 0
        for directory in ["lz4", "none"] {
            let dir = try pfs.inode(try pfs.lookup(in: pfs.root, name: Array(directory.utf8)).inum)
            try pfs.readDirectory(dir, from: 0) { entry in
                let inode = try pfs.inode(entry.inum)
                let name = directory + "/" + String(decoding: entry.name, as: UTF8.self)
                XCTAssertEqual(try pfs.read(inode, offset: 0, count: Int(inode.meta.size)), files[name], name)
                XCTAssertEqual(inode.meta.compAlgo & 0x0F, directory == "lz4" ? 0x02 : 0x00, name)
                seen += 1
                return true
            }
        }
        XCTAssertEqual(seen, files.count)
    }
}
