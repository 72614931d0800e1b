import Dispatch
import Glibc
import Synchronization

/// Waits for Unix signals without a signal handler: the signals are ignored for default
/// delivery and observed through Dispatch signal sources.
///
/// ```swift
/// let stop = SignalWaiter(signals: [SIGTERM, SIGINT])
/// let signal = await stop.wait()   // suspends until one arrives
/// ```
public final class SignalWaiter: Sendable {
    // Only written in init and never read afterwards: kept solely to keep the sources alive.
    // DispatchSource is not Sendable, hence nonisolated(unsafe); no access can race.
    nonisolated(unsafe) private let sources: [DispatchSourceSignal]
    private let state = Mutex<(received: [Int32], waiters: [CheckedContinuation<Int32, Never>])>(([], []))

    /// Starts observing `signals`.
    public init(signals: [Int32]) {
        var created: [DispatchSourceSignal] = []
        for s in signals {
            Glibc.signal(s, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: s, queue: .global())
            created.append(source)
        }
        sources = created
        for (source, s) in zip(created, signals) {
            source.setEventHandler { [weak self] in self?.deliver(s) }
            source.resume()
        }
    }

    private func deliver(_ signal: Int32) {
        let waiters = state.withLock { st -> [CheckedContinuation<Int32, Never>] in
            if st.waiters.isEmpty {
                st.received.append(signal)
                return []
            }
            let w = st.waiters
            st.waiters.removeAll()
            return w
        }
        for w in waiters { w.resume(returning: signal) }
    }

    /// Suspends until one of the signals arrives (returns immediately for one already received).
    @discardableResult
    public func wait() async -> Int32 {
        await withCheckedContinuation { (c: CheckedContinuation<Int32, Never>) in
            let ready = state.withLock { st -> Int32? in
                if !st.received.isEmpty { return st.received.removeFirst() }
                st.waiters.append(c)
                return nil
            }
            if let ready { c.resume(returning: ready) }
        }
    }
}
