// Results of work spread over every core (DispatchQueue.concurrentPerform): compression and
// sealing in the flush, opening the encrypted blocks of a large read.

/// Slots written by concurrent workers, each slot by one worker only, read after they end.
public final class ConcurrentResults<T>: @unchecked Sendable {
    // Raw storage: workers write distinct slots, which an Array property would turn into
    // overlapping accesses to the whole array.
    private let slots: UnsafeMutablePointer<T?>
    private let count: Int

    public init(count: Int) {
        self.count = count
        slots = .allocate(capacity: count)
        slots.initialize(repeating: nil, count: count)
    }

    deinit {
        slots.deinitialize(count: count)
        slots.deallocate()
    }

    public subscript(index: Int) -> T? {
        get { slots[index] }
        set { slots[index] = newValue }
    }
}

