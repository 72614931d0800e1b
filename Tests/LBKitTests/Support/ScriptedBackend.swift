import Foundation
import Glibc
import Synchronization

/// A blocking raw backend on its own thread whose per-connection behaviour a test scripts:
/// `script(connectionIndex, requestIndexOnConnection)` returns the bytes to answer, or nil to
/// close the connection without answering. An answer with neither Content-Length nor
/// Transfer-Encoding is followed by a close (read-until-close framing).
final class ScriptedBackend: @unchecked Sendable {
    // @unchecked: `listener` and `script` are immutable after init; counters are Atomics.
    let port: Int
    private let listener: Int32
    private let script: @Sendable (Int, Int) -> [UInt8]?
    let connections = Atomic<Int>(0)
    let requests = Atomic<Int>(0)

    init(script: @escaping @Sendable (Int, Int) -> [UInt8]?) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &addr) { p in p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(fd, 16)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { p in p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = Int(UInt16(bigEndian: addr.sin_port))
        listener = fd
        self.script = script
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            // Closed here, by the accepting thread, never by stop(): a number closed under a
            // running accept() could be reused by another test's socket and steal its connections.
            if client < 0 { close(listener); return }
            let index = connections.add(1, ordering: .relaxed).oldValue
            Thread.detachNewThread { [self] in serve(client, index) }
        }
    }

    private func serve(_ client: Int32, _ connection: Int) {
        defer { close(client) }
        var got: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        var n = 0
        while true {
            while let r = got.firstRange(of: [13, 10, 13, 10]) {
                got.removeSubrange(0..<r.upperBound)
                requests.add(1, ordering: .relaxed)
                guard let answer = script(connection, n) else { return }
                n += 1
                _ = answer.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                // A response without Content-Length or chunked framing ends at close.
                let text = String(decoding: answer, as: UTF8.self).lowercased()
                if !text.contains("content-length:") && !text.contains("transfer-encoding:") { return }
            }
            let r = buf.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            if r <= 0 { return }
            got += buf[0..<r]
        }
    }

    /// Stops listening (new connects are refused) and wakes the accept thread, which closes the fd.
    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
    }

    static func ok(_ body: String, extra: String = "") -> [UInt8] {
        Array("HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\(extra)\r\n\(body)".utf8)
    }
}
