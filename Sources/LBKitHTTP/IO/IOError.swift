import Glibc

/// An error from a socket operation.
public enum SocketError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The operation's deadline passed before it completed.
    case timedOut
    /// The socket was closed locally while the operation waited.
    case closed
    /// The server or client is shutting down and interrupted an idle wait.
    case shutdown
    /// The peer reset the connection (ECONNRESET / EPIPE).
    case connectionReset
    /// The peer refused the connection (ECONNREFUSED).
    case connectionRefused
    /// A system call failed with `errno`.
    case system(operation: String, errno: Int32)

    /// Maps an errno from `operation` to an `SocketError`.
    static func fromErrno(_ operation: String, _ code: Int32 = errno) -> SocketError {
        switch code {
        case ECONNRESET, EPIPE: .connectionReset
        case ECONNREFUSED: .connectionRefused
        case ETIMEDOUT: .timedOut
        default: .system(operation: operation, errno: code)
        }
    }

    public var description: String {
        switch self {
        case .timedOut: "timed out"
        case .closed: "socket closed"
        case .shutdown: "shutting down"
        case .connectionReset: "connection reset by peer"
        case .connectionRefused: "connection refused"
        case .system(let op, let code): "\(op) failed: \(String(cString: strerror(code))) (errno \(code))"
        }
    }
}
