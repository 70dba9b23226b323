// Memberwise initializers for the structures that were decode-only, so writers (the
// encoders, image builders, future write paths) can construct them. Every parameter
// defaults to zero (or an all-zero array of the on-disk length), so a caller names only
// the fields it sets.

extension InodeMeta {
    public init(
        version: UInt16 = 0, pfsSubtype: UInt8 = 0, uflags: UInt32 = 0, rmajor: UInt32 = 0, rminor: UInt32 = 0,
        ctime: UInt64 = 0, mtime: UInt64 = 0, atime: UInt64 = 0, btime: UInt64 = 0,
        uid: HAMMER2UUID = .zero, gid: HAMMER2UUID = .zero,
        type: ObjectType = .unknown, opFlags: UInt8 = 0, capFlags: UInt16 = 0, mode: UInt32 = 0,
        inum: UInt64 = 0, size: UInt64 = 0, nlinks: UInt64 = 0, iparent: UInt64 = 0,
        nameKey: UInt64 = 0, nameLength: UInt16 = 0, ncopies: UInt8 = 0, compAlgo: UInt8 = 0, checkAlgo: UInt8 = 0,
        pfsNMasters: UInt8 = 0, pfsType: PFSType = .none, pfsInum: UInt64 = 0,
        pfsClusterID: HAMMER2UUID = .zero, pfsFilesystemID: HAMMER2UUID = .zero,
        dataQuota: UInt64 = 0, inodeQuota: UInt64 = 0, pfsLastSnapshotTID: UInt64 = 0, decryptCheck: UInt64 = 0
    ) {
        self.version = version; self.pfsSubtype = pfsSubtype; self.uflags = uflags
        self.rmajor = rmajor; self.rminor = rminor
        self.ctime = ctime; self.mtime = mtime; self.atime = atime; self.btime = btime
        self.uid = uid; self.gid = gid
        self.type = type; self.opFlags = opFlags; self.capFlags = capFlags; self.mode = mode
        self.inum = inum; self.size = size; self.nlinks = nlinks; self.iparent = iparent
        self.nameKey = nameKey; self.nameLength = nameLength; self.ncopies = ncopies
        self.compAlgo = compAlgo; self.checkAlgo = checkAlgo
        self.pfsNMasters = pfsNMasters; self.pfsType = pfsType; self.pfsInum = pfsInum
        self.pfsClusterID = pfsClusterID; self.pfsFilesystemID = pfsFilesystemID
        self.dataQuota = dataQuota; self.inodeQuota = inodeQuota
        self.pfsLastSnapshotTID = pfsLastSnapshotTID; self.decryptCheck = decryptCheck
    }
}

extension InodeData {
    public init(meta: InodeMeta, filename: [UInt8], content: InodeContent, keyRecord: [UInt8]? = nil) {
        self.keyRecord = keyRecord
        self.meta = meta
        self.filename = filename
        self.content = content
    }
}

extension VolumeConfig {
    public init(
        copyid: UInt8 = 0, inprog: UInt8 = 0, chainTo: UInt8 = 0, chainFrom: UInt8 = 0, flags: UInt16 = 0,
        error: UInt8 = 0, priority: UInt8 = 0, remotePFSType: UInt8 = 0, pfsClusterID: HAMMER2UUID = .zero,
        label: [UInt8] = [UInt8](repeating: 0, count: 16), path: [UInt8] = [UInt8](repeating: 0, count: 64)
    ) {
        self.copyid = copyid; self.inprog = inprog; self.chainTo = chainTo; self.chainFrom = chainFrom
        self.flags = flags; self.error = error; self.priority = priority; self.remotePFSType = remotePFSType
        self.pfsClusterID = pfsClusterID; self.label = label; self.path = path
    }
}

extension VolumeHeader {
    public init(
        magic: UInt64 = HAMMER2.volumeMagicHostOrder, bootBegin: UInt64 = 0, bootEnd: UInt64 = 0,
        auxBegin: UInt64 = 0, auxEnd: UInt64 = 0, volumeSize: UInt64 = 0, version: UInt32 = 0, flags: UInt32 = 0,
        copyid: UInt8 = 0, freemapVersion: UInt8 = 0, peerType: UInt8 = 0, volumeID: UInt8 = 0, volumeCount: UInt8 = 0,
        fsid: HAMMER2UUID = .zero, fstype: HAMMER2UUID = .zero,
        allocatorSize: UInt64 = 0, allocatorFree: UInt64 = 0, allocatorBegin: UInt64 = 0,
        mirrorTID: UInt64 = 0, freemapTID: UInt64 = 0, bulkfreeTID: UInt64 = 0, totalSize: UInt64 = 0,
        copyExists: [UInt32] = [UInt32](repeating: 0, count: 8),
        sectorCRCs: [UInt32] = [UInt32](repeating: 0, count: 8),
        superRootBlockset: [Blockref] = [Blockref](repeating: .empty, count: HAMMER2.blocksetCount),
        freemapBlockset: [Blockref] = [Blockref](repeating: .empty, count: HAMMER2.blocksetCount),
        volumeOffsets: [UInt64] = [UInt64](repeating: 0, count: HAMMER2.maxVolumes),
        copyInfo: [VolumeConfig] = [VolumeConfig](repeating: VolumeConfig(), count: 256),
        volumeHeaderCRC: UInt32 = 0
    ) {
        self.magic = magic; self.bootBegin = bootBegin; self.bootEnd = bootEnd
        self.auxBegin = auxBegin; self.auxEnd = auxEnd; self.volumeSize = volumeSize
        self.version = version; self.flags = flags; self.copyid = copyid; self.freemapVersion = freemapVersion
        self.peerType = peerType; self.volumeID = volumeID; self.volumeCount = volumeCount
        self.fsid = fsid; self.fstype = fstype
        self.allocatorSize = allocatorSize; self.allocatorFree = allocatorFree; self.allocatorBegin = allocatorBegin
        self.mirrorTID = mirrorTID; self.freemapTID = freemapTID; self.bulkfreeTID = bulkfreeTID
        self.totalSize = totalSize; self.copyExists = copyExists; self.sectorCRCs = sectorCRCs
        self.superRootBlockset = superRootBlockset; self.freemapBlockset = freemapBlockset
        self.volumeOffsets = volumeOffsets; self.copyInfo = copyInfo; self.volumeHeaderCRC = volumeHeaderCRC
    }
}

extension BitmapData {
    public init(linear: Int32 = 0, allocationClass: UInt16 = 0, avail: UInt32 = 0,
                bitmap: [UInt64] = [UInt64](repeating: 0, count: 8)) {
        self.linear = linear
        self.allocationClass = allocationClass
        self.avail = avail
        self.bitmap = bitmap
    }
}
