import Foundation
import Glibc
import Synchronization

/// A minimal WebSocket echo server for tests (RFC 6455): answers the opening handshake with
/// `101 Switching Protocols` and the computed `Sec-WebSocket-Accept`, then echoes each frame's
/// payload back in an unmasked frame of the same opcode, until a close frame.
final class WebSocketEchoBackend: @unchecked Sendable {
    // @unchecked: `listener` is immutable after init; counters are Atomics.
    let port: Int
    private let listener: Int32
    let upgrades = Atomic<Int>(0)

    init() {
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
        Thread.detachNewThread { [self] in
            while true {
                let client = accept(listener, nil, nil)
                // Closed by the accepting thread, never by stop(): see ScriptedBackend.
                if client < 0 { close(listener); return }
                Thread.detachNewThread { [self] in serve(client) }
            }
        }
    }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
    }

    private func serve(_ fd: Int32) {
        defer { close(fd) }
        var got: [UInt8] = []
        func fill() -> Bool {
            var buf = [UInt8](repeating: 0, count: 16384)
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return false }
            got += buf[0..<n]
            return true
        }
        func take(_ n: Int) -> [UInt8]? {
            while got.count < n { if !fill() { return nil } }
            let out = Array(got[0..<n])
            got.removeFirst(n)
            return out
        }
        func sendAll(_ bytes: [UInt8]) {
            _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
        while got.firstRange(of: [13, 10, 13, 10]) == nil { if !fill() { return } }
        let end = got.firstRange(of: [13, 10, 13, 10])!.upperBound
        let head = String(decoding: got[0..<end], as: UTF8.self)
        got.removeFirst(end)
        var key = ""
        for line in head.components(separatedBy: "\r\n") where line.lowercased().hasPrefix("sec-websocket-key:") {
            key = line.dropFirst("sec-websocket-key:".count).trimmingCharacters(in: .whitespaces)
        }
        guard head.lowercased().contains("upgrade: websocket"), !key.isEmpty else {
            sendAll(Array("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".utf8))
            return
        }
        upgrades.add(1, ordering: .relaxed)
        let accept = Self.acceptValue(for: key)
        sendAll(Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \(accept)\r\n\r\n".utf8))
        while true {
            guard let h = take(2) else { return }
            let opcode = h[0] & 0x0F
            let masked = h[1] & 0x80 != 0
            var length = Int(h[1] & 0x7F)
            if length == 126 { guard let e = take(2) else { return }; length = Int(e[0]) << 8 | Int(e[1]) }
            if length == 127 { guard let e = take(8) else { return }; length = e.reduce(0) { $0 << 8 | Int($1) } }
            let mask = masked ? (take(4) ?? [0, 0, 0, 0]) : [0, 0, 0, 0]
            guard var payload = take(length) else { return }
            for i in payload.indices { payload[i] ^= mask[i % 4] }
            sendAll(Self.frame(opcode: opcode, payload: payload, mask: nil))
            if opcode == 8 { return }
        }
    }

    /// `base64(SHA-1(key + GUID))` (RFC 6455 4.2.2).
    static func acceptValue(for key: String) -> String {
        Data(SHA1.hash(Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))).base64EncodedString()
    }

    /// One final frame; masked when `mask` is given (clients must mask, servers must not).
    static func frame(opcode: UInt8, payload: [UInt8], mask: [UInt8]?) -> [UInt8] {
        var out: [UInt8] = [0x80 | opcode]
        let maskBit: UInt8 = mask == nil ? 0 : 0x80
        if payload.count < 126 {
            out.append(maskBit | UInt8(payload.count))
        } else {
            out.append(maskBit | 126)
            out.append(UInt8(payload.count >> 8)); out.append(UInt8(payload.count & 0xFF))
        }
        if let mask {
            out += mask
            out += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        } else {
            out += payload
        }
        return out
    }
}

/// SHA-1 (FIPS 180-4), for the WebSocket handshake in tests only.
enum SHA1 {
    static func hash(_ message: [UInt8]) -> [UInt8] {
        var h: [UInt32] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0]
        var data = message
        let bitLength = UInt64(message.count) * 8
        data.append(0x80)
        while data.count % 64 != 56 { data.append(0) }
        for i in (0..<8).reversed() { data.append(UInt8((bitLength >> (UInt64(i) * 8)) & 0xFF)) }
        func rotl(_ x: UInt32, _ n: UInt32) -> UInt32 { (x << n) | (x >> (32 - n)) }
        for chunk in stride(from: 0, to: data.count, by: 64) {
            var w = [UInt32](repeating: 0, count: 80)
            for i in 0..<16 {
                w[i] = UInt32(data[chunk + 4 * i]) << 24 | UInt32(data[chunk + 4 * i + 1]) << 16
                    | UInt32(data[chunk + 4 * i + 2]) << 8 | UInt32(data[chunk + 4 * i + 3])
            }
            for i in 16..<80 { w[i] = rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1) }
            var (a, b, c, d, e) = (h[0], h[1], h[2], h[3], h[4])
            for i in 0..<80 {
                let (f, k): (UInt32, UInt32)
                switch i {
                case 0..<20: (f, k) = ((b & c) | (~b & d), 0x5A827999)
                case 20..<40: (f, k) = (b ^ c ^ d, 0x6ED9EBA1)
                case 40..<60: (f, k) = ((b & c) | (b & d) | (c & d), 0x8F1BBCDC)
                default: (f, k) = (b ^ c ^ d, 0xCA62C1D6)
                }
                let t = rotl(a, 5) &+ f &+ e &+ k &+ w[i]
                (e, d, c, b, a) = (d, c, rotl(b, 30), a, t)
            }
            h[0] &+= a; h[1] &+= b; h[2] &+= c; h[3] &+= d; h[4] &+= e
        }
        return h.flatMap { v in (0..<4).map { UInt8((v >> (24 - UInt32($0) * 8)) & 0xFF) } }
    }
}
