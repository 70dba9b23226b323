// The release every tool reports with --version, and the Debian package's version
// (scripts/package-deb reads it from `hammer2 --version`).

public enum Release {
    public static let version = "0.9.0"

    /// "<tool> (HAMMER2 for Linux) <version>", as --version prints it.
    public static func versionLine(_ tool: String) -> String {
        "\(tool) (HAMMER2 for Linux) \(version)"
    }
}
