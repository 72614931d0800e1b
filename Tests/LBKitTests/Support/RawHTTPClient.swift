import Glibc
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

/// A deliberately simple blocking HTTP/1.1 client for tests, independent of LBKit's own client:
/// it sends exact bytes and parses responses itself, with a receive timeout on every read.
final class RawHTTPClient {
    let fd: Int32
    private var pending: [UInt8] = []

    struct Response {
        var status: Int
        var headers: [(String, String)]
        var body: [UInt8]
        func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }
        var bodyText: String { String(decoding: body, as: UTF8.self) }
    }

    enum Failure: Error { case connect(Int32), timeout, closed, malformed(String) }

    /// Connects to 127.0.0.1:`port`, from `source` (another loopback address such as 127.0.0.2)
    /// when given.
    init(port: Int, timeoutMs: Int = 5000, source: String? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var tv = timeval(tv_sec: timeoutMs / 1000, tv_usec: Int((timeoutMs % 1000) * 1000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &local) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if bound != 0 { throw Failure.connect(errno) }
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 {
            // No close here: a class whose stored properties are all set runs deinit when its init
            // throws, and deinit closes `fd`. Closing here too was a double close that could kill
            // an unrelated socket that reused the number in between.
            throw Failure.connect(errno)
        }
    }

    deinit { close(fd) }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Changes how long a read waits (a short wait to see that nothing arrives, then a long one).
    func setReceiveTimeout(ms: Int) {
        var tv = timeval(tv_sec: ms / 1000, tv_usec: Int((ms % 1000) * 1000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    func send(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { throw Failure.closed }
            off += n
        }
    }

    /// Reads more bytes; false at EOF.
    private func fill() throws -> Bool {
        var buf = [UInt8](repeating: 0, count: 65536)
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK { throw Failure.timeout }
            if errno == ECONNRESET { return false }
            throw Failure.closed
        }
        if n == 0 { return false }
        pending.append(contentsOf: buf[0..<n])
        return true
    }

    /// Reads until EOF (or timeout) and returns everything received.
    func readToEnd() throws -> [UInt8] {
        while try fill() {}
        defer { pending = [] }
        return pending
    }

    /// Reads one response head only (interim ones included), leaving the body unread.
    func readHeadOnly() throws -> Response {
        var headEnd: Int?
        while headEnd == nil {
            headEnd = findCRLFCRLF()
            if headEnd == nil {
                let more = try fill()
                if !more { throw Failure.closed }
            }
        }
        let headBytes = Array(pending[0..<headEnd!])
        pending.removeFirst(headEnd! + 4)
        let lines = String(decoding: headBytes, as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw Failure.malformed(lines[0]) }
        var headers: [(String, String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        return Response(status: status, headers: headers, body: [])
    }

    /// Reads the next chunk of a chunked body; nil after the last chunk.
    func readChunk() throws -> [UInt8]? {
        let line = try readLine()
        guard let size = Int(line.split(separator: ";")[0], radix: 16) else { throw Failure.malformed("chunk size \(line)") }
        if size == 0 {
            while try !readLine().isEmpty {}
            return nil
        }
        let data = try readExactly(size)
        _ = try readExactly(2)
        return data
    }

    /// Reads exactly `count` raw bytes.
    func readBytes(_ count: Int) throws -> [UInt8] { try readExactly(count) }

    /// Reads one response (Content-Length, chunked, or until close). `headRequest`: no body.
    func readResponse(headRequest: Bool = false) throws -> Response {
        var response = try readHeadOnly()
        let status = response.status
        if status < 200 { return try readResponse(headRequest: headRequest) }  // skip interim
        if headRequest || status == 204 || status == 304 { return response }
        if let te = response.header("Transfer-Encoding"), te.lowercased().contains("chunked") {
            while true {
                let line = try readLine()
                guard let size = Int(line.split(separator: ";")[0], radix: 16) else { throw Failure.malformed("chunk size \(line)") }
                if size == 0 {
                    while try !readLine().isEmpty {}
                    return response
                }
                response.body += try readExactly(size)
                _ = try readExactly(2)
            }
        } else if let cl = response.header("Content-Length"), let n = Int(cl) {
            response.body = try readExactly(n)
        } else {
            response.body = try readToEnd()
        }
        return response
    }

    private func findCRLFCRLF() -> Int? {
        guard pending.count >= 4 else { return nil }
        for i in 0...(pending.count - 4) where pending[i] == 13 && pending[i + 1] == 10 && pending[i + 2] == 13 && pending[i + 3] == 10 {
            return i
        }
        return nil
    }

    private func readLine() throws -> String {
        while true {
            if let i = pending.firstIndex(of: 10), i > 0, pending[i - 1] == 13 {
                let line = String(decoding: pending[0..<(i - 1)], as: UTF8.self)
                pending.removeFirst(i + 1)
                return line
            }
            guard try fill() else { throw Failure.closed }
        }
    }

    private func readExactly(_ n: Int) throws -> [UInt8] {
        while pending.count < n { guard try fill() else { throw Failure.closed } }
        let out = Array(pending[0..<n])
        pending.removeFirst(n)
        return out
    }

    /// One request on a fresh connection.
    static func request(port: Int, method: String = "GET", path: String = "/", headers: [(String, String)] = [],
                        body: [UInt8] = [], timeoutMs: Int = 5000, source: String? = nil) throws -> Response {
        let client = try RawHTTPClient(port: port, timeoutMs: timeoutMs, source: source)
        try client.send(Self.format(method: method, path: path, headers: headers, body: body))
        return try client.readResponse(headRequest: method == "HEAD")
    }

    static func format(method: String, path: String, headers: [(String, String)] = [], body: [UInt8] = [], close: Bool = false) -> [UInt8] {
        var text = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        for (n, v) in headers { text += "\(n): \(v)\r\n" }
        if !body.isEmpty || ["POST", "PUT", "PATCH"].contains(method) { text += "Content-Length: \(body.count)\r\n" }
        if close { text += "Connection: close\r\n" }
        text += "\r\n"
        return Array(text.utf8) + body
    }
}

import Foundation
