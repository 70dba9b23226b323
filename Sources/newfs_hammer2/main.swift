// newfs_hammer2: creates a HAMMER2 filesystem (see NewfsCommand).
import Glibc
import HAMMER2Tools

exit(NewfsCommand.main(Array(CommandLine.arguments.dropFirst())))
