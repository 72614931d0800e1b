import Synchronization

/// The result of ``UpstreamClient/send(_:to:on:deadline:answerBy:abortHandle:)``.
package enum ExchangeProgress: Sendable {
    /// The whole response arrived.
    case complete(UpstreamResponse)
    /// Nothing arrived by the soft deadline; the exchange can still be finished or aborted.
    case pending(PendingExchange)
}

/// An exchange whose request was sent but whose response has not started yet.
///
/// `@unchecked Sendable`: it only carries the checked-out connection to the one task that calls
/// ``UpstreamClient/finish(_:deadline:)``; other tasks may only abort it through the exchange's
/// ``ExchangeAbortHandle`` (which closes the socket, a thread-safe operation).
package final class PendingExchange: @unchecked Sendable {
    let connection: PooledConnection
    let endpoint: UpstreamEndpoint
    let loop: LBEventLoop
    let method: String
    let reused: Bool
    let upgrade: Bool
    /// Aborts this exchange from another task.
    package let abortHandle: ExchangeAbortHandle

    init(connection: PooledConnection, endpoint: UpstreamEndpoint, loop: LBEventLoop, method: String, reused: Bool,
         abortHandle: ExchangeAbortHandle, upgrade: Bool = false) {
        self.upgrade = upgrade
        self.connection = connection
        self.endpoint = endpoint
        self.loop = loop
        self.method = method
        self.reused = reused
        self.abortHandle = abortHandle
    }
}

/// Lets another task give up an exchange: ``abort()`` closes its connection, so a waiting read
/// ends at once, and an exchange that has not connected yet stops before sending.
///
/// ```swift
/// let handle = ExchangeAbortHandle()
/// async let slow = client.execute(request, to: endpointA, on: loop, deadline: d, abortHandle: handle)
/// // ... another backend answered first:
/// handle.abort()
/// ```
package final class ExchangeAbortHandle: Sendable {
    private let state = Mutex<(socket: Socket?, aborted: Bool)>((nil, false))

    /// Creates a handle.
    package init() {}

    /// Aborts the exchange (idempotent).
    package func abort() {
        let socket = state.withLock { st -> Socket? in
            st.aborted = true
            return st.socket
        }
        socket?.close()
    }

    /// Whether ``abort()`` was called.
    package var isAborted: Bool { state.withLock { $0.aborted } }

    /// Forgets the socket before its connection goes back to the pool (so a late abort cannot close
    /// a pooled connection another exchange may be using); false when already aborted.
    func detach() -> Bool {
        state.withLock { st in
            if st.aborted { return false }
            st.socket = nil
            return true
        }
    }

    /// Records the socket in use; false when already aborted.
    func attach(_ socket: Socket) -> Bool {
        state.withLock { st in
            if st.aborted { return false }
            st.socket = socket
            return true
        }
    }
}
