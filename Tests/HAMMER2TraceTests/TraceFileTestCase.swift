// Trace tests each work on a segment file of their own, removed afterwards.

import Foundation
import Glibc
import XCTest

class TraceFileTestCase: XCTestCase {
    var path = ""

    override func setUp() {
        super.setUp()
        path = FileManager.default.temporaryDirectory.appendingPathComponent("h2-trace-\(UUID().uuidString.prefix(8))").path
    }

    override func tearDown() {
        unlink(path)
        super.tearDown()
    }
}
