// The encoders are the exact inverses of the decoders: synthetic values round-trip, and the
// structures in DragonFly-made fixture images re-encode to the bytes on disk.

import Foundation
import HAMMER2Codecs
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class EncodingTests: XCTestCase {
    // MARK: Synthetic round trips

    func testBlockrefRoundTrip() throws {
        var generator = SplitMix64(seed: 7)
        for _ in 0..<200 {
            let bref = Blockref(
                type: BlockrefType(rawValue: generator.byte()), methods: generator.byte(), copyid: generator.byte(),
                keybits: generator.byte(), vradix: generator.byte(), flags: generator.byte(),
                leafCount: UInt16(truncatingIfNeeded: generator.next()), key: generator.next(),
                mirrorTID: generator.next(), modifyTID: generator.next(), dataOffset: generator.next(),
                updateTID: generator.next(), embed0: generator.next(), embed1: generator.next(),
                check: CheckArea(words: (generator.next(), generator.next(), generator.next(), generator.next(),
                                         generator.next(), generator.next(), generator.next(), generator.next())))
            let bytes = bref.encoded()
            XCTAssertEqual(bytes.count, 128)
            XCTAssertEqual(try bytes.withUnsafeBytes { try Blockref(decoding: $0) }, bref)
        }
    }

    /// A walk decodes an indirect block's used slots only, in slot order, and a dirent's
    /// inline name is the check area's first bytes as on disk.
    func testNonEmptyBlockrefsAndInlineNames() throws {
        var generator = SplitMix64(seed: 11)
        var raw: [UInt8] = []
        var expected: [Blockref] = []
        for slot in 0..<512 {
            guard generator.next() % 3 != 0 else { raw += Blockref.empty.encoded(); continue }
            var bref = Blockref.empty
            bref.type = .dirent
            bref.key = UInt64(slot) << 20 | generator.next() & 0xFFFF
            let name = (0..<(1 + Int(generator.next() % 64))).map { _ in UInt8(0x21 + generator.next() % 90) }
            (bref.embed0, bref.embed1) = Blockref.direntEmbed(inum: UInt64(slot), nameLength: name.count, type: .regularFile)
            bref.check = CheckArea(bytes: name)
            XCTAssertEqual(try bref.direntName(nameBlock: nil), name)
            XCTAssertEqual(bref.check.prefix(name.count), name)
            raw += bref.encoded()
            expected.append(bref)
        }
        let decoded = try raw.withUnsafeBytes { try decodeNonEmptyBlockrefs($0, count: 512) }
        XCTAssertEqual(decoded, expected)
        XCTAssertEqual(try raw.withUnsafeBytes { try decodeNonEmptyBlockrefs($0, count: 0) }, [])
        XCTAssertThrowsError(try raw.withUnsafeBytes { try decodeNonEmptyBlockrefs($0, count: 513) })
    }

    func testBlockrefFieldOffsets() throws {
        var bref = Blockref.empty
        bref.type = .dirent
        bref.methods = 0x32
        bref.keybits = 0x11
        bref.leafCount = 0x0102
        bref.key = 0x8877_6655_4433_2211
        bref.dataOffset = Blockref.dataOffset(0x1234_0000, radix: 10)
        (bref.embed0, bref.embed1) = Blockref.direntEmbed(inum: 1025, nameLength: 9, type: .regularFile)
        bref.check = CheckArea(bytes: Array("name.txt".utf8))
        let bytes = bref.encoded()
        XCTAssertEqual(bytes[0x00], 4)
        XCTAssertEqual(bytes[0x01], 0x32)
        XCTAssertEqual(bytes[0x03], 0x11)
        XCTAssertEqual(Array(bytes[0x06...0x07]), [0x02, 0x01])
        XCTAssertEqual(Array(bytes[0x08...0x0F]), [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88])
        XCTAssertEqual(Array(bytes[0x20...0x23]), [0x0A, 0x00, 0x34, 0x12])
        XCTAssertEqual(Array(bytes[0x30...0x31]), [0x01, 0x04])  // inum 1025
        XCTAssertEqual(Array(bytes[0x38...0x3A]), [9, 0, 2])  // namlen 9, type REGFILE
        XCTAssertEqual(Array(bytes[0x40..<0x48]), Array("name.txt".utf8))
        let decoded = try bytes.withUnsafeBytes { try Blockref(decoding: $0) }
        XCTAssertEqual(decoded.direntInodeNumber, 1025)
        XCTAssertEqual(decoded.direntNameLength, 9)
        XCTAssertEqual(decoded.direntType, .regularFile)
        XCTAssertEqual(decoded.physicalBytes, 1024)
    }

    func testInodeRoundTrip() throws {
        var generator = SplitMix64(seed: 11)
        func uuid() -> HAMMER2UUID { HAMMER2UUID(bytes: (0..<16).map { _ in generator.byte() }) }
        var meta = InodeMeta(
            version: 1, pfsSubtype: 1, uflags: 0x20, rmajor: 8, rminor: 3, ctime: generator.next(),
            mtime: generator.next(), atime: generator.next(), btime: generator.next(), uid: .unixID(1000),
            gid: uuid(), type: .directory, opFlags: InodeMeta.opFlagPFSRoot, capFlags: 0x0102, mode: 0o1777,
            inum: 1, size: generator.next(), nlinks: 3, iparent: 5, nameKey: generator.next(), nameLength: 4,
            ncopies: 1, compAlgo: InodeMeta.compAlgo(.zlib, level: 9), checkAlgo: CheckMethod.sha192.rawValue,
            pfsNMasters: 2, pfsType: .master, pfsInum: 4096, pfsClusterID: uuid(), pfsFilesystemID: uuid(),
            dataQuota: generator.next(), inodeQuota: generator.next(), pfsLastSnapshotTID: generator.next(),
            decryptCheck: generator.next())
        XCTAssertEqual(try meta.encoded().withUnsafeBytes { try InodeMeta(decoding: $0) }, meta)

        let blockset = (0..<4).map { i -> Blockref in
            var bref = Blockref.empty
            bref.type = i == 3 ? .empty : .indirect
            bref.key = UInt64(i) << 60
            bref.keybits = i == 3 ? 0 : 60
            return bref
        }
        let directory = InodeData(meta: meta, filename: Array("DATA".utf8), content: .blockset(blockset))
        XCTAssertEqual(try InodeData(decoding: directory.encoded()), directory)

        meta.type = .regularFile
        meta.opFlags = InodeMeta.opFlagDirectData
        meta.nameLength = 255
        let embedded = InodeData(meta: meta, filename: [UInt8](repeating: 0x61, count: 255),
                                 content: .embedded((0..<512).map { UInt8(truncatingIfNeeded: $0 * 7) }))
        let bytes = embedded.encoded()
        XCTAssertEqual(bytes.count, 1024)
        XCTAssertEqual(try InodeData(decoding: bytes), embedded)
        XCTAssertEqual(bytes[0x51], InodeMeta.opFlagDirectData)
        XCTAssertEqual(bytes[0x83], 0x93)
        XCTAssertEqual(Array(bytes[0x3C...0x3F]), [0xE8, 0x03, 0, 0])  // uid 1000 in bytes 12..15
    }

    func testVolumeHeaderRoundTripAndChecksums() throws {
        var offsets = [UInt64](repeating: UInt64.max, count: HAMMER2.maxVolumes)
        offsets[0] = 0
        var copyInfo = [VolumeConfig](repeating: VolumeConfig(), count: 256)
        copyInfo[3] = VolumeConfig(copyid: 3, flags: 0x11, priority: 2, label: [UInt8](repeating: 0x4C, count: 16))
        var sroot = Blockref.empty
        sroot.type = .inode
        sroot.dataOffset = Blockref.dataOffset(0x40_0000, radix: 10)
        let header = VolumeHeader(
            bootBegin: 4 << 20, bootEnd: 4 << 20, volumeSize: 1 << 30, version: 2, peerType: 3, volumeCount: 1,
            fsid: HAMMER2UUID(bytes: Array(1...16)), fstype: .hammer2FilesystemType,
            allocatorSize: 1000, allocatorFree: 900, allocatorBegin: 4 << 20, mirrorTID: 16, freemapTID: 16,
            totalSize: 1 << 30, copyExists: [1, 2, 3, 4, 5, 6, 7, 8],
            superRootBlockset: [sroot, .empty, .empty, .empty], volumeOffsets: offsets, copyInfo: copyInfo)
        let bytes = header.encoded()
        XCTAssertEqual(bytes.count, 65_536)
        XCTAssertNil(bytes.withUnsafeBytes { VolumeHeader.validate($0) }, "computed CRCs must validate")
        var expected = header
        let decoded = try VolumeHeader(decoding: bytes)
        expected.sectorCRCs = decoded.sectorCRCs
        expected.volumeHeaderCRC = decoded.volumeHeaderCRC
        XCTAssertEqual(decoded, expected)
        XCTAssertEqual(decoded.sectorCRCs[VolumeHeader.sect0CRCIndex], CRC32C.checksum(Array(bytes[0..<508])))
        XCTAssertEqual(decoded.sectorCRCs[VolumeHeader.sect1CRCIndex], CRC32C.checksum(Array(bytes[512..<1024])))
        XCTAssertEqual(decoded.volumeHeaderCRC, CRC32C.checksum(Array(bytes[0..<65_532])))
        // Without updating, the stored CRC fields are written as given: the exact inverse.
        XCTAssertEqual(try VolumeHeader(decoding: decoded.encoded(updatingChecksums: false)), decoded)
        XCTAssertEqual(decoded.encoded(updatingChecksums: false), bytes)
    }

    func testBitmapRoundTripAndStates() {
        var entry = BitmapData(linear: 0x4400, allocationClass: 0x310, avail: 0x3F_8000)
        entry.setState(.allocated, ofBlock: 0)
        entry.setState(.possiblyFree, ofBlock: 33)
        entry.setState(.allocated, ofBlock: 255)
        entry.setState(.free, ofBlock: 255)
        let leaf = encodeFreemapLeaf([BitmapData](repeating: BitmapData(), count: 255) + [entry])
        let decoded = try! decodeFreemapLeaf(leaf)
        XCTAssertEqual(decoded[255], entry)
        XCTAssertEqual(decoded[255].state(ofBlock: 0), .allocated)
        XCTAssertEqual(decoded[255].state(ofBlock: 33), .possiblyFree)
        XCTAssertEqual(decoded[255].state(ofBlock: 255), .free)
        XCTAssertEqual(decoded[255].bitmap[0], 0b11)
    }

    func testComputedCheckAreasVerify() {
        let data = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        for method in [CheckMethod.iscsi32, .xxhash64, .sha192, .freemap] {
            var bref = Blockref.empty
            bref.type = method == .freemap ? .freemapLeaf : .data
            bref.methods = Blockref.methods(check: method, compression: .none)
            bref.setCheck(over: data)
            XCTAssertEqual(CheckCode.verify(bref, data), .valid, "\(method)")
            var damaged = data
            damaged[100] ^= 1
            XCTAssertNotEqual(CheckCode.verify(bref, damaged), .valid, "\(method) must notice a flipped bit")
        }
        XCTAssertEqual(CheckArea.computed(.none, over: data), .zero)
        XCTAssertEqual(CheckArea.freemap(crc: 0x1122_3344, bigmask: 0xFFFF_FFFF, avail: 5).freemapBigmask, 0xFFFF_FFFF)
    }

    func testUUIDText() {
        XCTAssertEqual(HAMMER2UUID.hammer2FilesystemType.description, HAMMER2.fstypeUUIDString)
        XCTAssertNil(HAMMER2UUID(string: "5cbb9ad1-862d-11dc-a94d"))
        XCTAssertEqual(HAMMER2UUID.unixID(0x0102_0304).unixID, 0x0102_0304)
    }

    func testCompressorsRoundTripThroughDecompressor() throws {
        let text = Array(String(repeating: "hammer2 compresses this line well. ", count: 2000).utf8.prefix(65_536))
        let lz4 = try XCTUnwrap(text.withUnsafeBytes { Compressor.lz4($0) })
        XCTAssertLessThanOrEqual(lz4.count, 32_768)
        XCTAssertEqual(try lz4.withUnsafeBytes { try Decompressor.lz4($0) }, text)
        for level in [0, 1, 6, 9, 12] {
            let zlib = try XCTUnwrap(text.withUnsafeBytes { Compressor.zlib($0, level: level) })
            XCTAssertEqual(try zlib.withUnsafeBytes { try Decompressor.zlib($0) }, text)
        }
        var generator = SplitMix64(seed: 3)
        let random = (0..<65_536).map { _ in generator.byte() }
        XCTAssertNil(random.withUnsafeBytes { Compressor.lz4($0) }, "random data must not halve")
        XCTAssertNil(random.withUnsafeBytes { Compressor.zlib($0, level: 6) })
    }

    // MARK: DragonFly-made structures re-encode to the same bytes

    func testFixtureVolumeHeadersReencodeIdentically() throws {
        for name in try Fixtures.names() {
            let handle = try FileHandle(forReadingFrom: try Fixtures.image(name))
            defer { try? handle.close() }
            let size = try handle.seekToEnd()
            for offset in VolumeHeader.copyOffsets(deviceSize: size) {
                try handle.seek(toOffset: offset)
                let raw = [UInt8](try XCTUnwrap(handle.read(upToCount: 65_536)))
                guard raw.withUnsafeBytes({ VolumeHeader.validate($0) }) == nil else { continue }
                let header = try VolumeHeader(decoding: raw)
                XCTAssertEqual(header.encoded(updatingChecksums: false), raw, "\(name) header at \(offset)")
                XCTAssertEqual(header.encoded(updatingChecksums: true), raw, "\(name) header at \(offset), CRCs recomputed")
            }
        }
    }

    func testFixtureInodesIndirectBlocksAndFreemapReencodeIdentically() throws {
        for name in ["tiny", "links", "names", "bulkfree"] {
            let handle = try FileHandle(forReadingFrom: try Fixtures.image(name))
            defer { try? handle.close() }
            func read(_ bref: Blockref) throws -> [UInt8] {
                try handle.seek(toOffset: bref.mediaOffset)
                return [UInt8](try XCTUnwrap(handle.read(upToCount: bref.physicalBytes)))
            }
            // The current state is the valid header copy with the highest mirror_tid.
            var best: VolumeHeader?
            for offset in VolumeHeader.copyOffsets(deviceSize: try handle.seekToEnd()) {
                try handle.seek(toOffset: offset)
                let raw = [UInt8](try XCTUnwrap(handle.read(upToCount: 65_536)))
                guard raw.withUnsafeBytes({ VolumeHeader.validate($0) }) == nil else { continue }
                let header = try VolumeHeader(decoding: raw)
                if best == nil || best!.mirrorTID < header.mirrorTID { best = header }
            }
            let header = try XCTUnwrap(best)
            var pending = header.superRootBlockset + header.freemapBlockset
            var checked = (inodes: 0, indirect: 0, leaves: 0)
            while let bref = pending.popLast() {
                switch bref.type {
                case .inode:
                    let raw = try read(bref)
                    let inode = try InodeData(decoding: raw)
                    XCTAssertEqual(inode.encoded(), raw, "\(name): inode \(inode.meta.inum)")
                    pending += inode.blockset
                    checked.inodes += 1
                case .indirect, .freemapNode:
                    let raw = try read(bref)
                    let children = try decodeBlockrefs(raw)
                    XCTAssertEqual(encodeBlockrefs(children, bytes: raw.count), raw, "\(name): indirect block")
                    pending += children
                    checked.indirect += 1
                case .freemapLeaf:
                    let raw = try read(bref)
                    XCTAssertEqual(encodeFreemapLeaf(try decodeFreemapLeaf(raw)), raw, "\(name): freemap leaf")
                    checked.leaves += 1
                default:
                    break
                }
            }
            XCTAssertGreaterThan(checked.inodes, 3, name)
            XCTAssertGreaterThan(checked.indirect, 0, name)
            XCTAssertEqual(checked.leaves, 1, name)
        }
    }
}
