import Glibc
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// Holds a loopback TCP port bound but not listening: connects to it are refused, and no other
/// test running in parallel can take the port. Used where a test needs a backend that is down.
final class PortHolder: @unchecked Sendable {
    // @unchecked: `fd` is only closed once, in release()/deinit, guarded by `released` which only
    // the owning test touches.
    let port: Int
    private let fd: Int32
    private var released = false

    /// Binds `port` (0 = any free port).
    init(port: Int = 0) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        // The port may have TIME_WAIT connections from the server that just stopped; an active
        // listener on it still makes bind fail.
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        self.fd = fd
        self.port = Int(UInt16(bigEndian: addr.sin_port))
        if !ok { throw RawHTTPClient.Failure.connect(errno) }  // deinit closes fd
    }

    /// `http://127.0.0.1:<port>`.
    var url: BackendURL {
        // The literal is always valid; fall back to a parse of a fixed string that cannot fail either.
        (try? BackendURL(parsing: "http://127.0.0.1:\(port)")) ?? BackendURL.placeholder
    }

    /// Frees the port (e.g. right before restarting a server on it).
    func release() {
        guard !released else { return }
        released = true
        close(fd)
    }

    deinit { release() }
}

extension BackendURL {
    /// A syntactically valid URL for tests that need one without a parse that could throw.
    static var placeholder: BackendURL {
        do { return try BackendURL(parsing: "http://127.0.0.1:9") } catch { fatalError("unreachable: \(error)") }
    }
}
