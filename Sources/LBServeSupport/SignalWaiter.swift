import LBKit
internal import CLBKitShim
import Glibc
import Synchronization

/// Waits for Unix signals without a race at start-up.
///
/// `init` installs a minimal C signal handler (in CLBKitShim) that writes the signal number to a
/// self-pipe, and starts one thread that reads the pipe. The handler is async-signal-safe and
/// works whichever thread the kernel picks, so a signal that arrives at any moment after `init`
/// returns is delivered to ``wait()``, never lost and never fatal. Create it before printing any
/// readiness line.
///
/// ```swift
/// let stop = SignalWaiter(signals: [SIGTERM, SIGINT])   // before starting servers
/// // ... start servers, print "Router running on port 8000" ...
/// let signal = await stop.wait()   // suspends until one arrives
/// ```
public final class SignalWaiter: Sendable {
    private let readFD: Int32
    private let state = Mutex<(received: [Int32], waiters: [CheckedContinuation<Int32, Never>])>(([], []))

    /// Installs the handler for `signals` and starts the thread that receives them.
    /// Only one `SignalWaiter` per process is supported (the handler has one pipe).
    public init(signals: [Int32]) {
        readFD = signals.withUnsafeBufferPointer { lbk_signal_pipe_install($0.baseAddress, Int32($0.count)) }
        guard readFD >= 0 else { return }
        let box = Unmanaged.passRetained(self).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { arg in
            guard let arg else { return nil }
            let waiter = Unmanaged<SignalWaiter>.fromOpaque(arg).takeRetainedValue()
            waiter.receiveLoop()
            return nil
        }, box)
        if rc == 0 { pthread_detach(tid) } else { Unmanaged<SignalWaiter>.fromOpaque(box).release() }
    }

    private func receiveLoop() {
        var byte: UInt8 = 0
        while true {
            let n = read(readFD, &byte, 1)
            if n == 1 { deliver(Int32(byte)) } else if n < 0 && errno == EINTR { continue } else { return }
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

    /// Suspends until one of the signals arrives (returns at once for one already received).
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
