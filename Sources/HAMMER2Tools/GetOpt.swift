// A small getopt(3): DragonFly's tools take short options before their operands, and ours
// keep exactly that grammar ("hammer2 -s /mnt pfs-list", "mount_hammer2 -o ro img@L /mnt").

public struct GetOpt {
    public enum Failure: Error, CustomStringConvertible, Equatable {
        case unknownOption(Character)
        case missingArgument(Character)

        public var description: String {
            switch self {
            case let .unknownOption(c): return "unknown option -- \(c)"
            case let .missingArgument(c): return "option requires an argument -- \(c)"
            }
        }
    }

    /// Parsed options in order, as (letter, argument).
    public var options: [(Character, String?)] = []
    /// Operands after the options ("--" ends options).
    public var operands: [String] = []
    /// True when --help or -h was given.
    public var wantsHelp = false
    /// True when --version was given.
    public var wantsVersion = false

    /// `spec` is getopt's string: letters, each followed by ':' when it takes an argument.
    public init(_ arguments: [String], spec: String) throws {
        var takesArgument: [Character: Bool] = [:]
        let chars = Array(spec)
        var i = 0
        while i < chars.count {
            let takes = i + 1 < chars.count && chars[i + 1] == ":"
            takesArgument[chars[i]] = takes
            i += takes ? 2 : 1
        }
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "--" { operands += arguments[(index + 1)...]; break }
            if argument == "--help" { wantsHelp = true; index += 1; continue }
            if argument == "--version" { wantsVersion = true; index += 1; continue }
            guard argument.hasPrefix("-"), argument.count > 1 else { operands += arguments[index...]; break }
            var letters = Array(argument.dropFirst())
            while !letters.isEmpty {
                let letter = letters.removeFirst()
                if letter == "h" && takesArgument["h"] == nil { wantsHelp = true; continue }
                guard let takes = takesArgument[letter] else { throw Failure.unknownOption(letter) }
                if takes {
                    if !letters.isEmpty {
                        options.append((letter, String(letters)))
                        letters = []
                    } else if index + 1 < arguments.count {
                        index += 1
                        options.append((letter, arguments[index]))
                    } else {
                        throw Failure.missingArgument(letter)
                    }
                } else {
                    options.append((letter, nil))
                }
            }
            index += 1
        }
    }
}
