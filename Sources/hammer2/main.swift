// hammer2: DragonFly's HAMMER2 management utility (see Hammer2Command).
import Glibc
import HAMMER2Tools

exit(Hammer2Command.main(Array(CommandLine.arguments.dropFirst())))
