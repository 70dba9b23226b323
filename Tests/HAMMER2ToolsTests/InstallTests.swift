// Installing the way Linux users expect (issue 26): scripts/install lays the tools,
// mount(8)'s helpers, man pages, completion and systemd units in the standard places;
// the man pages render without warnings and document every option --help lists; the
// units pass systemd-analyze verify; the completion offers directives and PFS labels;
// scripts/package-deb makes a package whose version is the tools' --version.

import Foundation
import Glibc
import HAMMER2TestSupport
import HAMMER2Tools
import XCTest

/// Runs a bash command line; its status, stdout and stderr.
func shell(_ command: String, environment: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
    try Binaries.runProgram("/bin/bash", ["-c", command], environment: environment)
}

final class InstallTests: XCTestCase {
    var stage = ""
    let tools = ["newfs_hammer2", "mount_hammer2", "fsck_hammer2", "hammer2", "mount_unionfs"]

    override func setUpWithError() throws {
        stage = FileManager.default.temporaryDirectory.appendingPathComponent("h2-install-\(UUID().uuidString.prefix(8))").path
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: stage) }

    var root: String { Fixtures.packageRoot.path }

    func install(_ arguments: String) throws {
        let result = try shell("'\(root)/scripts/install' --bin-dir '\(try Binaries.directory().path)' \(arguments)")
        XCTAssertEqual(result.status, 0, result.stderr)
    }

    func testEveryToolPrintsTheReleaseVersion() throws {
        for tool in tools {
            let result = try Binaries.run(tool, ["--version"])
            XCTAssertEqual(result.status, 0, tool)
            XCTAssertEqual(result.stdout, Release.versionLine(tool) + "\n")
        }
    }

    func testInstallPutsEverythingInTheStandardPlaces() throws {
        try install("--prefix /usr --destdir '\(stage)'")
        let fm = FileManager.default
        for tool in tools {
            XCTAssertTrue(fm.isExecutableFile(atPath: "\(stage)/usr/sbin/\(tool)"), tool)
            XCTAssertTrue(fm.fileExists(atPath: "\(stage)/usr/share/man/man8/\(tool).8.gz"), tool)
        }
        for helper in ["mount.hammer2", "mount.fuse.hammer2", "umount.fuse.hammer2"] {
            XCTAssertEqual(try fm.destinationOfSymbolicLink(atPath: "\(stage)/usr/sbin/\(helper)"), "mount_hammer2", helper)
        }
        XCTAssertTrue(fm.fileExists(atPath: "\(stage)/usr/share/bash-completion/completions/hammer2"))
        let service = try String(contentsOfFile: "\(stage)/usr/lib/systemd/system/hammer2-cleanup@.service", encoding: .utf8)
        XCTAssertTrue(service.contains("ExecStart=/usr/sbin/hammer2 -q cleanup %f"), service)
        XCTAssertTrue(fm.fileExists(atPath: "\(stage)/usr/lib/systemd/system/hammer2-cleanup@.timer"))
        // Under /usr/local the helpers go where mount(8) looks: /sbin.
        try install("--prefix /usr/local --destdir '\(stage)/local'")
        XCTAssertEqual(try fm.destinationOfSymbolicLink(atPath: "\(stage)/local/sbin/mount.hammer2"), "/usr/local/sbin/mount_hammer2")
        // --uninstall takes it all away again.
        try install("--prefix /usr --destdir '\(stage)' --uninstall")
        let left = try shell("find '\(stage)/usr' -type f -o -type l")
        XCTAssertEqual(left.stdout, "", "left behind by --uninstall")
    }

    /// man -l renders each page without a warning, and each page names every option its
    /// tool's usage line has.
    func testManPagesRenderAndDocumentEveryOption() throws {
        for tool in tools {
            let page = "\(root)/man/\(tool).8"
            let rendered = try shell("man --warnings -E UTF-8 -l '\(page)'", environment: ["MANPAGER": "cat", "MANWIDTH": "80", "LC_ALL": "C.UTF-8"])
            XCTAssertEqual(rendered.status, 0, rendered.stderr)
            XCTAssertEqual(rendered.stderr, "", "\(tool).8 has warnings")
            XCTAssertTrue(rendered.stdout.contains("SYNOPSIS") && rendered.stdout.contains("EXIT STATUS"), tool)
            let usage = try Binaries.run(tool, ["--help"]).stdout
            let synopsis = usage.split(separator: "\n", omittingEmptySubsequences: false).prefix { !$0.trimmingCharacters(in: .whitespaces).isEmpty }.joined(separator: " ")
            // Every "-x" of the usage's synopsis (or its option list for hammer2).
            let source = tool == "hammer2" ? usage.components(separatedBy: "hash [")[0] : synopsis
            let letters = Set(source.matches(of: /(?:^|[\s\[|])-([A-Za-z])\b/).map { String($0.output.1) })
            XCTAssertFalse(letters.isEmpty, tool)
            let text = rendered.stdout.replacingOccurrences(of: "\u{2010}", with: "-")
            for letter in letters {
                XCTAssertTrue(text.contains("-\(letter)"), "\(tool).8 does not document -\(letter)")
            }
        }
        // The directives hammer2 --help lists are all in hammer2.8.
        let page = try shell("man -E UTF-8 -l '\(root)/man/hammer2.8'", environment: ["MANPAGER": "cat", "LC_ALL": "C.UTF-8"]).stdout
        let usage = try Binaries.run("hammer2", ["--help"]).stdout
        for line in usage.split(separator: "\n") where line.hasPrefix("    ") && !line.hasPrefix("     ") {
            guard let directive = line.split(separator: " ").first, directive.first?.isLetter == true else { continue }
            XCTAssertTrue(page.contains(String(directive)), "hammer2.8 does not document \(directive)")
        }
    }

    func testSystemdUnitsVerify() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze") else { throw XCTSkip("no systemd-analyze") }
        // Installed into a real prefix so that ExecStart names a binary that exists.
        try install("--prefix '\(stage)/usr' --helper-dir '\(stage)/sbin'")
        let units = "\(stage)/usr/lib/systemd/system"
        for suffix in ["service", "timer"] {
            try FileManager.default.copyItem(atPath: "\(units)/hammer2-cleanup@.\(suffix)", toPath: "\(stage)/hammer2-cleanup@mnt-data.\(suffix)")
        }
        try FileManager.default.copyItem(atPath: "\(root)/dist/systemd/mnt-data.mount.example", toPath: "\(stage)/mnt-data.mount")
        let verify = try shell("cd '\(stage)' && systemd-analyze verify --man=no hammer2-cleanup@mnt-data.service hammer2-cleanup@mnt-data.timer ./mnt-data.mount")
        XCTAssertEqual(verify.status, 0, verify.stderr)
        XCTAssertFalse(verify.stderr.contains("hammer2"), verify.stderr)
        // verify does fail on a broken unit (so the check above means something).
        let broken = try shell("cd '\(stage)' && sed -i 's|ExecStart=.*|ExecStart=/nonexistent/hammer2 cleanup %f|' hammer2-cleanup@mnt-data.service && systemd-analyze verify --man=no hammer2-cleanup@mnt-data.service")
        XCTAssertNotEqual(broken.status, 0)
    }

    func testCompletionOffersDirectivesAndLabels() throws {
        let library = "/usr/share/bash-completion/bash_completion"
        guard FileManager.default.fileExists(atPath: library) else { throw XCTSkip("bash-completion is not installed") }
        let image = stage + ".img"
        defer { try? FileManager.default.removeItem(atPath: image) }
        XCTAssertEqual(try Binaries.run("newfs_hammer2", ["-s", "256m", "-L", "DATA", "-L", "HOME", image]).status, 0)
        let bin = try Binaries.directory().path
        func complete(_ words: [String]) throws -> Set<String> {
            let quoted = words.map { "'\($0)'" }.joined(separator: " ")
            let script = """
            source \(library); source '\(root)/dist/completion/hammer2.bash'
            COMP_WORDS=(\(quoted)); COMP_CWORD=\(words.count - 1); COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}
            \(words[0] == "hammer2" ? "_hammer2" : "_mount_hammer2") hammer2; printf '%s\\n' "${COMPREPLY[@]}"
            """
            let result = try shell(script, environment: ["PATH": bin + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "")])
            return Set(result.stdout.split(separator: "\n").map(String.init))
        }
        XCTAssertTrue(try complete(["hammer2", "pfs-"]).isSuperset(of: ["pfs-list", "pfs-create", "pfs-delete", "pfs-clid", "pfs-fsid"]))
        XCTAssertEqual(try complete(["hammer2", "-f", image, "pfs-delete", ""]), ["DATA", "HOME", "LOCAL"])
        XCTAssertEqual(try complete(["hammer2", "setcomp", "z"]), ["zlib", "zlib:6", "zlib:7", "zlib:8", "zlib:9"])
        XCTAssertEqual(try complete(["mount_hammer2", image + "@H"]), [image + "@HOME"])
    }

    func testDebianPackageCarriesTheToolsAtTheirVersion() throws {
        let result = try shell("'\(root)/scripts/package-deb' --bin-dir '\(try Binaries.directory().path)' --output '\(stage)' --fast")
        XCTAssertEqual(result.status, 0, result.stderr)
        let deb = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(deb.hasSuffix(".deb") && deb.contains("hammer2_\(Release.version)_"), deb)
        let info = try shell("dpkg-deb --field '\(deb)' Package Version Depends")
        XCTAssertTrue(info.stdout.contains("Version: \(Release.version)"), info.stdout)
        XCTAssertTrue(info.stdout.contains("fuse3"), info.stdout)
        let contents = try shell("dpkg-deb --contents '\(deb)'").stdout
        for path in ["./usr/sbin/hammer2", "./usr/sbin/mount_hammer2", "./usr/sbin/mount.hammer2 -> mount_hammer2",
                     "./usr/share/man/man8/hammer2.8.gz", "./usr/lib/systemd/system/hammer2-cleanup@.timer"] {
            XCTAssertTrue(contents.contains(path), "\(path) not in the package")
        }
    }

    /// mount(8)'s and umount(8)'s helpers (mount_hammer2 under their names) refuse bad
    /// arguments with a usage error, and a non-hammer2 mount point with a clear one.
    func testHelpersRefuseBadArguments() throws {
        try FileManager.default.createDirectory(atPath: stage, withIntermediateDirectories: true)
        for helper in ["mount.hammer2", "umount.fuse.hammer2"] {
            try FileManager.default.createSymbolicLink(atPath: "\(stage)/\(helper)", withDestinationPath: try Binaries.path("mount_hammer2"))
        }
        func run(_ helper: String, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
            try Binaries.runProgram("\(stage)/\(helper)", arguments)
        }
        XCTAssertEqual(try run("mount.hammer2", []).status, 2)
        XCTAssertEqual(try run("mount.hammer2", ["x.img@DATA"]).status, 2, "no mount point")
        XCTAssertEqual(try run("mount.hammer2", ["x.img@DATA", "/tmp", "-N", "1"]).status, 2, "another namespace")
        XCTAssertEqual(try run("mount.hammer2", ["x.img@DATA", "/tmp", "-q"]).status, 2, "unknown flag")
        let unknown = try run("mount.hammer2", ["x.img@DATA", "/tmp", "-o", "rw,frobnicate"])
        XCTAssertEqual(unknown.status, 2)
        XCTAssertTrue(unknown.stderr.contains("unknown mount option(s): frobnicate"), unknown.stderr)
        XCTAssertEqual(try run("mount.hammer2", ["x.img@DATA", "/nonexistent-dir"]).status, 1)
        XCTAssertEqual(try run("mount.hammer2", ["--help"]).status, 0)
        XCTAssertEqual(try run("umount.fuse.hammer2", []).status, 2)
        XCTAssertEqual(try run("umount.fuse.hammer2", ["/tmp", "-z"]).status, 2, "unknown flag")
        let notOurs = try run("umount.fuse.hammer2", ["/tmp"])
        XCTAssertEqual(notOurs.status, 1)
        XCTAssertTrue(notOurs.stderr.contains("not a hammer2 mount"), notOurs.stderr)
    }
}
