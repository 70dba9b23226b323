// fsck_hammer2: read-only verification of a HAMMER2 filesystem (see FsckCommand).
import Glibc
import HAMMER2Tools

exit(FsckCommand.main(Array(CommandLine.arguments.dropFirst())))
