// Fuzz targets for the on-disk decoders and the decompressors. Each takes arbitrary bytes,
// runs the decoder the engine runs on media, and checks what must hold for any input: no
// trap, and where an encoder exists, decoding what it encodes gives the same structure back.
// A broken property stops the process (fatalError), which libFuzzer records as a finding.

import HAMMER2Codecs
import HAMMER2Encryption
import HAMMER2Engine
import HAMMER2Format
import HAMMER2Trace
#if canImport(Glibc)
import Glibc
#endif

public enum FuzzTarget: String, CaseIterable, Sendable {
    case volumeHeader = "volume-header"
    case blockref
    case inode
    case dirent
    case indirect
    case freemap
    case lz4
    case zlib
    case keyRecord = "key-record"
    case traceSegment = "trace-segment"
    case keyHistory = "key-history"
    case attributeTable = "attribute-table"
    case intentLog = "intent-log"
    case sendStream = "send-stream"
    case image

    /// Runs one input through the target. `image` needs base images: use `ImageFuzzer`.
    public func run(_ input: [UInt8]) {
        switch self {
        case .volumeHeader: DecoderTargets.volumeHeader(input)
        case .blockref: DecoderTargets.blockrefs(input)
        case .inode: DecoderTargets.inode(input)
        case .dirent: DecoderTargets.dirent(input)
        case .indirect: DecoderTargets.indirect(input)
        case .freemap: DecoderTargets.freemap(input)
        case .lz4: DecoderTargets.lz4(input)
        case .zlib: DecoderTargets.zlib(input)
        case .keyRecord: DecoderTargets.keyRecord(input)
        case .traceSegment: DecoderTargets.traceSegment(input)
        case .keyHistory: DecoderTargets.keyHistoryAndNames(input)
        case .attributeTable: DecoderTargets.attributeTable(input)
        case .intentLog: DecoderTargets.intentLog(input)
        case .sendStream: DecoderTargets.sendStream(input)
        case .image: preconditionFailure("the image target runs through ImageFuzzer")
        }
    }
}

/// A property every input must keep; its failure is a finding.
@inline(never)
func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("fuzz property broken: \(message())") }
}

/// `bytes` cut or zero-padded to exactly `count` (structures have fixed sizes on media).
func fitted(_ bytes: [UInt8], _ count: Int) -> [UInt8] {
    bytes.count >= count ? Array(bytes[0..<count]) : bytes + [UInt8](repeating: 0, count: count - bytes.count)
}

public enum DecoderTargets {
    /// hammer2_volume_data (64 KiB): decode, judge, and re-encode without touching the CRCs.
    public static func volumeHeader(_ input: [UInt8]) {
        let raw = fitted(input, HAMMER2.volumeHeaderBytes)
        _ = raw.withUnsafeBytes { VolumeHeader.validate($0) }
        guard let header = try? VolumeHeader(decoding: raw) else { return }
        let again = try? VolumeHeader(decoding: header.encoded(updatingChecksums: false))
        require(again == header, "volume header does not survive encode/decode")
        for bref in header.superRootBlockset + header.freemapBlockset { examine(bref) }
    }

    /// Arrays of hammer2_blockref (128 bytes each): decode, derive, re-encode.
    public static func blockrefs(_ input: [UInt8]) {
        let count = (input.count + HAMMER2.blockrefBytes - 1) / HAMMER2.blockrefBytes
        guard count > 0 else { return }
        let raw = fitted(input, count * HAMMER2.blockrefBytes)
        guard let refs = try? decodeBlockrefs(raw) else { return }
        for bref in refs {
            examine(bref)
            let again = try? Blockref(decoding: bref.encoded())
            require(again == bref, "blockref does not survive encode/decode")
            _ = CheckCode.verify(bref, raw)
        }
        _ = SubtreeStatistics(children: refs)
        _ = try? BlockTree.orderedChildren(refs, parentRange: 0...UInt64.max, insideIndirect: false)
    }

    /// hammer2_inode_data (1 KiB): meta, filename, embedded data or blockset.
    public static func inode(_ input: [UInt8]) {
        let raw = fitted(input, HAMMER2.inodeBytes)
        guard let inode = try? InodeData(decoding: raw) else { return }
        require(inode.filename.count <= HAMMER2.inodeMaxName, "filename longer than the inode holds")
        let again = try? InodeData(decoding: inode.encoded())
        require(again == inode, "inode does not survive encode/decode")
        for bref in inode.blockset { examine(bref) }
    }

    /// A DIRENT blockref (128 bytes, type forced to DIRENT) followed by its name block.
    public static func dirent(_ input: [UInt8]) {
        var head = fitted(input, HAMMER2.blockrefBytes)
        head[0] = BlockrefType.dirent.rawValue
        let nameBlock = input.count > HAMMER2.blockrefBytes ? Array(input[HAMMER2.blockrefBytes...]) : nil
        guard let bref = try? Blockref(decoding: head) else { return }
        guard let name = try? bref.direntName(nameBlock: nameBlock) else { return }
        require(name.count == bref.direntNameLength, "name of \(name.count) bytes for namlen \(bref.direntNameLength)")
        _ = DirectoryHash.key(for: name)
        _ = bref.direntType.description
    }

    /// An indirect block: a parent key (8 bytes) and keybits (1 byte), then its blockrefs.
    /// What the tree check accepts must really be ordered, disjoint and inside the parent.
    public static func indirect(_ input: [UInt8]) {
        guard input.count >= 9 else { return }
        var key: UInt64 = 0
        for i in 0..<8 { key |= UInt64(input[i]) << UInt64(8 * i) }
        let parent = Blockref(type: .indirect, methods: 0, key: key, keybits: input[8] % 65, tid: 1)
        let body = Array(input[9...])
        let count = body.count / HAMMER2.blockrefBytes
        guard count > 0, let refs = try? decodeBlockrefs(Array(body[0..<count * HAMMER2.blockrefBytes])) else { return }
        guard let ordered = try? BlockTree.orderedChildren(refs, parentRange: parent.key...parent.keyEnd, insideIndirect: true)
        else { return }
        var previousEnd: UInt64?
        for bref in ordered {
            require(bref.type != .empty, "an empty blockref among the ordered children")
            require(bref.key >= parent.key && bref.keyEnd <= parent.keyEnd, "child outside its parent's range")
            if let end = previousEnd { require(bref.key > end, "overlapping or unsorted siblings") }
            previousEnd = bref.keyEnd
        }
        _ = SubtreeStatistics(children: ordered)
    }

    /// A FREEMAP_LEAF block (32 KiB, 256 bitmap entries).
    public static func freemap(_ input: [UInt8]) {
        let raw = fitted(input, HAMMER2.freemapBlockBytes)
        guard let entries = try? decodeFreemapLeaf(raw) else { return }
        for entry in entries {
            for block in 0..<BitmapData.blocksPerEntry { _ = entry.state(ofBlock: block) }
        }
        let again = try? decodeFreemapLeaf(encodeFreemapLeaf(entries))
        require(again == entries, "freemap leaf does not survive encode/decode")
    }

    /// An LZ4 data block as hammer2_strategy stores it: never more than 64 KiB out, and what
    /// comes out compresses and decompresses back to itself.
    public static func lz4(_ input: [UInt8]) {
        guard let output = try? input.withUnsafeBytes({ try Decompressor.lz4($0) }) else { return }
        require(output.count <= Decompressor.maximumOutput, "lz4 produced \(output.count) bytes")
        if let packed = output.withUnsafeBytes({ Compressor.lz4($0) }) {
            let back = try? packed.withUnsafeBytes { try Decompressor.lz4($0) }
            require(back == output, "lz4 round trip differs")
        }
    }

    /// A zlib data block: the same properties.
    public static func zlib(_ input: [UInt8]) {
        guard let output = try? input.withUnsafeBytes({ try Decompressor.zlib($0) }) else { return }
        require(output.count <= Decompressor.maximumOutput, "zlib produced \(output.count) bytes")
        if let packed = output.withUnsafeBytes({ Compressor.zlib($0, level: 6) }) {
            let back = try? packed.withUnsafeBytes { try Decompressor.zlib($0) }
            require(back == output, "zlib round trip differs")
        }
    }

    /// An encrypted PFS's key record (128 bytes) and a sealed check area: decode, re-encode,
    /// and unwrap with a key file (a damaged record must fail cleanly, never trap).
    public static func keyRecord(_ input: [UInt8]) {
        let raw = fitted(input, KeyRecord.bytes)
        let sealed = SealedCheck(CheckArea(bytes: Array(raw[0..<64])))
        require(SealedCheck(sealed.area) == sealed, "sealed check area does not survive encode/decode")
        // As found, and with its checksum made right (so mutations reach the field checks).
        _ = try? KeyRecord(decoding: raw)
        guard let record = try? KeyRecord(decoding: KeyRecord.checksummed(raw)) else { return }
        require((try? KeyRecord(decoding: record.encoded())) == record, "key record does not survive encode/decode")
        if record.wrapping == .keyFile { _ = try? record.unwrap(.keyFile(fuzzKeyFile)) }
        let keys = PFSKeys(master: [UInt8](repeating: 1, count: 32), domain: record.domain)
        _ = keys.openInlineName(Array(raw[0..<64]), length: Int(raw[64] % 64), directory: UInt64(raw[65]))
    }

    /// The parsers added against issue 18's attacks: a key history (inode 2 of a rekeyed
    /// PFS) and a scheme-2 dirent name (check area, length field, name block), from any bytes.
    /// The extended attribute table of an attribute inode: what decodes is within the
    /// limits and has exactly one encoding (decoding refuses every other form).
    public static func attributeTable(_ input: [UInt8]) {
        guard let table = try? input.withUnsafeBytes({ try AttributeTable(decoding: $0) }) else { return }
        require(table.encoded() == input, "an attribute table decodes from a non-canonical form")
        require(table.encodedBytes <= AttributeTable.maximumTableBytes, "attribute table over its limit")
        for (key, value) in table.entries {
            require(key.name.count <= AttributeTable.maximumNameBytes && value.count <= AttributeTable.maximumValueBytes,
                    "attribute over its limits")
            require(AttributeTable.Namespace.split(key.fullName).map { $0.0 == key.namespace && $0.1 == key.name } ?? false,
                    "an attribute name that does not split back into its namespace")
        }
    }

    /// An intent log commit as a read-write open finds it (docs/format.md, "Intent log"):
    /// the 64-byte header, then the payload. What decodes encodes to the same structure,
    /// within the size its own accounting gives.
    public static func intentLog(_ input: [UInt8]) {
        let head = fitted(input, IntentLogHeader.bytes)
        if let header = head.withUnsafeBytes({ IntentLogHeader(decoding: $0) }) {
            var again = [UInt8](repeating: 0, count: IntentLogHeader.bytes)
            again.withUnsafeMutableBytes { header.encode(into: $0) }
            require(again == head, "an intent log header decodes from a non-canonical form")
        }
        let payload = input.count > IntentLogHeader.bytes ? Array(input[IntentLogHeader.bytes...]) : input
        guard let commit = try? payload.withUnsafeBytes({ try IntentLogCommit(decoding: $0) }) else { return }
        let encoded = commit.encoded()
        require(encoded.count == commit.encodedBytes, "intent log commit size accounting")
        require(encoded.count <= payload.count, "an intent log commit grows when encoded again")
        require((try? encoded.withUnsafeBytes { try IntentLogCommit(decoding: $0) }) == commit,
                "an intent log commit does not survive encode/decode")
    }

    /// A send stream as hammer2 receive reads it (docs/send-receive.md): records of a
    /// header and a payload, each payload decoded by its type. What decodes encodes to the
    /// same bytes (headers, begin, end, blocks) or the same structure (inodes).
    public static func sendStream(_ input: [UInt8]) {
        var position = 0
        while input.count - position >= SendStreamRecordHeader.bytes {
            let raw = Array(input[position..<(position + SendStreamRecordHeader.bytes)])
            position += SendStreamRecordHeader.bytes
            guard let header = try? raw.withUnsafeBytes({ try SendStreamRecordHeader(decoding: $0) }) else { return }
            require(header.encoded() == raw, "a send stream record header decodes from a non-canonical form")
            let end = min(input.count, position + Int(header.payloadBytes))
            let payload = Array(input[position..<end])
            position = end
            switch header.type {
            case .begin, .rawBegin:
                if let begin = try? payload.withUnsafeBytes({ try SendStreamBegin(decoding: $0) }) {
                    require(begin.encoded() == payload, "a send stream begin record does not survive decode/encode")
                }
            case .end:
                if let last = try? payload.withUnsafeBytes({ try SendStreamEnd(decoding: $0) }) {
                    require(last.encoded() == payload, "a send stream end record does not survive decode/encode")
                }
            case .blocks:
                if let blocks = try? payload.withUnsafeBytes({ try SendStreamBlocks(decoding: $0) }) {
                    require(blocks.encoded() == payload, "a send stream blocks record does not survive decode/encode")
                }
            case .rawBlocks:
                if let blocks = try? payload.withUnsafeBytes({ try SendStreamRawBlocks(decoding: $0) }) {
                    require(blocks.encoded() == payload, "a send stream raw blocks record does not survive decode/encode")
                }
            case .rawRoot:
                _ = try? payload.withUnsafeBytes { try InodeData(decoding: $0) }
            case .inodes:
                if let commit = try? payload.withUnsafeBytes({ try IntentLogCommit(decoding: $0) }) {
                    require((try? commit.encoded().withUnsafeBytes { try IntentLogCommit(decoding: $0) }) == commit,
                            "a send stream inodes record does not survive encode/decode")
                }
            }
        }
        if let token = SendResumeToken(String(decoding: input.prefix(120), as: UTF8.self)) {
            require(SendResumeToken(token.text) == token, "a resume token does not survive text/parse")
        }
    }

    public static func keyHistoryAndNames(_ input: [UInt8]) {
        if let history = try? KeyHistory(decoding: input) {
            require((try? KeyHistory(decoding: history.encoded())) == history, "key history does not survive encode/decode")
            _ = history.keys(domain: [UInt8](repeating: 2, count: 16), scheme: 2)
        }
        let raw = fitted(input, 64 + 2 + HAMMER2.inodeBytes)
        for scheme in [UInt8(1), 2] {
            let keys = PFSKeys(master: [UInt8](repeating: 3, count: 32), domain: [UInt8](repeating: 4, count: 16), scheme: scheme)
            let lengthField = Int(raw[64]) | Int(raw[65] & 1) << 8
            if let (name, _) = keys.openDirentName(lengthField: lengthField, typeField: ObjectType(rawValue: raw[65] >> 1),
                                                   area: Array(raw[0..<64]), block: Array(raw[66...]), directory: 9) {
                require(!name.isEmpty && name.count <= HAMMER2.inodeMaxName, "a dirent name of \(name.count) bytes")
            }
        }
    }

    /// A trace segment file as ktrdump, stat -w and the post-mortem readers map it: any
    /// bytes, of any length (a segment truncated under its reader included), must read
    /// without a trap or a hang.
    public static func traceSegment(_ input: [UInt8]) {
        let path = "\(TraceFiles.directory)/hammer2-fuzz.\(getpid()).ktr"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        defer { unlink(path) }
        let written = input.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == input.count, let reader = try? TraceReader(path: path) else { return }
        _ = reader.writerPID
        _ = reader.mask
        _ = reader.text("mount")
        let catalog = reader.catalog()
        for object in reader.objects() { _ = reader.statistics(object.name, attempts: 3) }
        for record in reader.events() { _ = catalog.events[record.event]?.name }
    }

    /// The derived values the engine computes from any blockref it meets.
    static func examine(_ bref: Blockref) {
        _ = bref.keyEnd
        _ = bref.physicalBytes
        _ = bref.mediaOffset
        _ = bref.checkMethod.description
        _ = bref.compression.description
        _ = bref.type.description
        if bref.type == .dirent { _ = try? bref.direntName(nameBlock: nil) }
    }
}
