// Constants of the HAMMER2 on-disk format (sys/vfs/hammer2/hammer2_disk.h).

public enum HAMMER2 {
    /// HAMMER2_ALLOC_MIN / HAMMER2_RADIX_MIN: smallest allocation.
    public static let allocationMinRadix = 10
    /// HAMMER2_RADIX_MAX: largest allocation, 64 KiB.
    public static let allocationMaxRadix = 16
    /// HAMMER2_PBUFSIZE: physical buffer and logical file block size.
    public static let physicalBufferSize = 65_536
    /// HAMMER2_EMBEDDED_BYTES: inode data area (embedded data or a blockset).
    public static let embeddedBytes = 512
    /// HAMMER2_SET_COUNT: blockrefs in a blockset.
    public static let blocksetCount = 4
    /// HAMMER2_BLOCKREF_BYTES
    public static let blockrefBytes = 128
    /// HAMMER2_INODE_BYTES
    public static let inodeBytes = 1024
    /// HAMMER2_INODE_MAXNAME
    public static let inodeMaxName = 256
    /// HAMMER2_VOLUME_BYTES: one volume header copy.
    public static let volumeHeaderBytes = 65_536
    /// HAMMER2_NUM_VOLHDRS: copies of the volume header, one per 2 GiB zone.
    public static let volumeHeaderCount = 4
    /// HAMMER2_ZONE_BYTES64: distance between volume header copies.
    public static let zoneBytes: UInt64 = 2 * 1024 * 1024 * 1024
    /// HAMMER2_MAX_VOLUMES
    public static let maxVolumes = 64
    /// HAMMER2_VOLUME_ID_HBO / _ABO
    public static let volumeMagicHostOrder: UInt64 = 0x4841_4d32_0517_2011
    public static let volumeMagicReversed: UInt64 = 0x1120_1705_324d_4148
    /// HAMMER2_UUID_STRING: the fstype of every HAMMER2 volume.
    public static let fstypeUUIDString = "5cbb9ad1-862d-11dc-a94d-01301bb8a9f5"
    /// HAMMER2_OFF_MASK / HAMMER2_OFF_MASK_RADIX: data_off = offset | size radix.
    public static let offsetMask: UInt64 = 0xFFFF_FFFF_FFFF_FFC0
    public static let offsetRadixMask: UInt64 = 0x3F
    /// HAMMER2_DIRHASH_VISIBLE: directory entry keys have bit 63 set.
    public static let dirhashVisible: UInt64 = 0x8000_0000_0000_0000
    /// HAMMER2_DIRHASH_LOMASK: collision space searched after a name's hash.
    public static let dirhashLowMask: UInt64 = 0x7FFF
    /// HAMMER2_DIRHASH_USERMSK
    public static let dirhashUserMask: UInt64 = 0x7FFF_FFFF_FFFF_FFFF
    /// XXH_HAMMER2_SEED (hammer2_xxhash.h)
    public static let xxhashSeed: UInt64 = 0x4d61_7474_446c_6c6e
    /// HAMMER2_FREEMAP_LEVELN_PSIZE: freemap node and leaf block size.
    public static let freemapBlockBytes = 32_768
    /// HAMMER2_FREEMAP_LEVEL0_RADIX: one bmap_data entry covers 4 MiB.
    public static let freemapLevel0Radix = 22
    /// HAMMER2_FREEMAP_LEVEL1_RADIX: one leaf covers 1 GiB.
    public static let freemapLevel1Radix = 30
    /// HAMMER2_FREEMAP_BLOCK_RADIX: one bitmap entry (2 bits) covers 16 KiB.
    public static let freemapBlockRadix = 14
    /// HAMMER2_BOOT_KEY, HAMMER2_SROOT_KEY
    public static let superRootKey: UInt64 = 0
    /// HAMMER2_INODE_START: first dynamically allocated inode number.
    public static let inodeStart: UInt64 = 1024
    /// HAMMER2_VOL_VERSION_MIN ... HAMMER2_VOL_VERSION_WIP
    public static let volumeVersionMin: UInt32 = 1
    public static let volumeVersionMultiVolumes: UInt32 = 2
    public static let volumeVersionWIP: UInt32 = 3
    /// Not DragonFly's: a volume holding encrypted PFSes. DragonFly refuses versions above
    /// WIP, so its kernel and tools never misread or write such a volume (docs/encryption.md).
    public static let volumeVersionEncryption: UInt32 = 4
}
