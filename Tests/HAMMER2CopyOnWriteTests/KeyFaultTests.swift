// Faults under the key operations of issue 18: a re-encryption whose writes fail (a full
// or failing device) stops with the device's errno, leaves the last flushed state readable
// and goes on from its saved cursor; a key change whose erasure of stale records fails
// says the key was changed (the change itself is durable) rather than failing as a whole.

import Foundation
import HAMMER2CopyOnWrite
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format
import HAMMER2TestSupport
import XCTest

final class KeyFaultTests: XCTestCase {
    let caller = Caller(uid: 0, gid: 0)
    let passphrase = KeySource.passphrase(Array("faulty but long enough".utf8))
    var recording: RecordingDevice!
    var device: FaultyDevice!

    override func setUpWithError() throws {
        recording = RecordingDevice(size: (1 << 30) + (64 << 20))
        _ = try Formatter.format(device: recording, options: FormatOptions(labels: ["DATA"]))
        device = FaultyDevice(base: recording)
    }

    func open(_ base: any BlockDevice) throws -> MutableFilesystem {
        let fs = try MutableFilesystem(volumes: VolumeSet(devices: [base]), readOnly: false)
        fs.keyDerivationCost = 10
        return fs
    }

    /// PFS SECRET with `files` files of random sizes; returns name -> content.
    func populate(files: Int) throws -> [String: [UInt8]] {
        var random = SplitMix64(seed: 17)
        var contents: [String: [UInt8]] = [:]
        let fs = try open(device)
        try fs.createPFS(label: "SECRET", encryption: passphrase)
        let pfs = try fs.openPFS("SECRET")
        for i in 0..<files {
            let bytes = random.bytes(Int(random.next() % 200_000))
            let inum = try pfs.create(in: 1, name: Array("file-\(i)".utf8), type: .regularFile, mode: 0o644, caller: caller).meta.inum
            _ = try bytes.withUnsafeBytes { try pfs.write(inum, offset: 0, $0) }
            contents["file-\(i)"] = bytes
        }
        try fs.flush()
        return contents
    }

    /// Every file of SECRET as a fresh unlock of the device reads it.
    func onDisk() throws -> [String: [UInt8]] {
        let fs = try open(RecordingDevice(size: recording.size, pages: recording.contents))
        try fs.unlockPFS("SECRET", source: passphrase)
        let pfs = try fs.openPFS("SECRET")
        var out: [String: [UInt8]] = [:]
        var names: [[UInt8]] = []
        try pfs.readDirectory(1, from: 0, withAttributes: false) { entry, _ in names.append(entry.name); return true }
        for name in names {
            let inum = try pfs.resolve(String(decoding: name, as: UTF8.self))
            out[String(decoding: name, as: UTF8.self)] = try pfs.read(inum, offset: 0, count: Int(try pfs.attributes(inum).meta.size))
        }
        return out
    }

    func testReencryptionOnAFailingDeviceStopsCleanlyAndResumes() throws {
        let contents = try populate(files: 30)
        _ = try open(device).rekeyPFS("SECRET", source: passphrase)
        for (what, errno) in [("device full", ENOSPC), ("write error", EIO)] {
            let fs = try open(device)
            try fs.unlockPFS("SECRET", source: passphrase)
            _ = try fs.reencrypt("SECRET", stepBytes: 256 << 10, maxSteps: 1)  // a step that lands
            device.set(FaultyDevice.Faults(failWritesFrom: 4, writeErrno: errno))
            XCTAssertThrowsError(try fs.reencrypt("SECRET", stepBytes: 256 << 10), what) { error in
                XCTAssertEqual((error as? EngineError)?.errno, errno, "\(what): \(error)")
            }
            XCTAssertGreaterThan(device.failedWrites, 0)
            device.set(FaultyDevice.Faults())
            XCTAssertEqual(try onDisk(), contents, "\(what): the last flushed state reads whole")
        }
        let fs = try open(device)
        try fs.unlockPFS("SECRET", source: passphrase)
        XCTAssertGreaterThan(try fs.keyGenerations("SECRET").cursor, 0, "a cursor was saved before the faults")
        let rest = try fs.reencrypt("SECRET")
        XCTAssertTrue(rest.finished)
        XCTAssertEqual(try fs.keyGenerations("SECRET").older, [])
        XCTAssertEqual(try onDisk(), contents)
    }

    func testAKeyChangeWhoseErasureFailsSaysTheKeyWasChanged() throws {
        let contents = try populate(files: 3)
        let newKey = KeySource.keyFile([UInt8](repeating: 0x42, count: 40))
        // A dry run on a copy counts the writes of the key change's flush (all but the erasure's).
        let copy = RecordingDevice(size: recording.size, pages: recording.contents)
        copy.startRecording()
        let dry = try open(copy).changeKey("SECRET", old: passphrase, new: newKey)
        XCTAssertGreaterThan(dry.erased, 0)
        let flushWrites = copy.log.filter { if case .write = $0 { return true } else { return false } }.count - dry.erased

        device.set(FaultyDevice.Faults(failWritesFrom: flushWrites))
        XCTAssertThrowsError(try open(device).changeKey("SECRET", old: passphrase, new: newKey)) { error in
            XCTAssertEqual((error as? EngineError)?.errno, EIO)
            XCTAssertTrue("\(error)".contains("the key of PFS SECRET was changed, but erasing the stale copies of its old key records failed"),
                          "\(error)")
        }
        device.set(FaultyDevice.Faults())
        // The change itself is durable: the new key opens the PFS, the old passphrase does not.
        let fs = try open(RecordingDevice(size: recording.size, pages: recording.contents))
        XCTAssertThrowsError(try fs.unlockPFS("SECRET", source: passphrase))
        try fs.unlockPFS("SECRET", source: newKey)
        let pfs = try fs.openPFS("SECRET")
        XCTAssertEqual(try pfs.read(try pfs.resolve("file-1"), offset: 0, count: 1 << 20), contents["file-1"])
    }
}
