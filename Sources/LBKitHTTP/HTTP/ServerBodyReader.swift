// ServerBodyReader: a large or chunked request body streamed to the handler from the client
// connection. Its own type with its own state (the BodySource the handler reads), so it lives
// apart from the connection's request loop; moved as is.

import LBKitPolicy

/// A request body streamed from the client connection (beyond the server's buffering limit):
/// read only as the handler asks, each read with a stall timeout, de-chunked, limited to
/// `maxBodyBytes` in total.
///
/// `@unchecked Sendable`: single consumer (``BodySource``); its state is touched only by the
/// handler task reading it and, after the handler returned, by the connection task.
final class ServerBodyReader: BodySource, @unchecked Sendable {
    enum Mode {
        case length(remaining: Int)
        case chunked(ChunkedDecoder, total: Int)
    }

    private let input: ConnectionInput
    private var mode: Mode
    private var prefix: [UInt8]
    let declaredLength: Int?
    private let stall: Duration
    private let writeTimeout: Duration
    private let maxBodyBytes: Int
    private var sendContinue: Bool
    private var finished = false
    private var started = false
    private var failed = false

    init(input: ConnectionInput, mode: Mode, prefix: [UInt8], declaredLength: Int?,
         configuration: HTTP1ServerConfiguration, sendContinue: Bool) {
        self.input = input
        self.mode = mode
        self.prefix = prefix
        self.declaredLength = declaredLength
        self.stall = configuration.bodyTimeout
        self.writeTimeout = configuration.writeTimeout
        self.maxBodyBytes = configuration.maxBodyBytes
        self.sendContinue = sendContinue
    }

    /// Whether the whole body was read (the connection can go on to the next request).
    var isComplete: Bool { finished && !failed }
    var hasStarted: Bool { started }

    func abandon() {
        if !finished {
            finished = true
            failed = true
        }
    }

    nonisolated(nonsending) func nextChunk() async throws(BodyStreamError) -> [UInt8]? {
        if !prefix.isEmpty {
            started = true
            defer { prefix = [] }
            return prefix
        }
        if finished {
            if failed { throw BodyStreamError("request body no longer available") }
            return nil
        }
        if sendContinue {
            sendContinue = false
            if input.buffer.isEmpty {
                do {
                    try await input.socket.write(HTTP1ServerConnection.continueBytes, deadline: deadlineNs(after: writeTimeout))
                } catch {
                    fail()
                    throw BodyStreamError("client connection closed")
                }
            }
        }
        started = true
        while true {
            switch mode {
            case .length(let remaining):
                if remaining == 0 {
                    finished = true
                    return nil
                }
                if !input.buffer.isEmpty {
                    let chunk = input.buffer.take(min(remaining, 64 * 1024))
                    mode = .length(remaining: remaining - chunk.count)
                    if remaining - chunk.count == 0 { finished = true }
                    return chunk
                }
            case .chunked(var decoder, let total):
                if !input.buffer.isEmpty {
                    var out: [UInt8] = []
                    do throws(HTTPParseError) {
                        try input.buffer.decodeChunked(&decoder, into: &out)
                    } catch {
                        fail()
                        throw BodyStreamError("invalid chunked request body: \(error.reason)")
                    }
                    let newTotal = total + out.count
                    mode = .chunked(decoder, total: newTotal)
                    if newTotal > maxBodyBytes {
                        fail()
                        throw BodyStreamError("request body exceeds the limit of \(maxBodyBytes) bytes")
                    }
                    if decoder.isComplete { finished = true }
                    if !out.isEmpty { return out }
                    if finished { return nil }
                }
            }
            let n: Int
            do {
                n = try await input.readMore(stall: stall)
            } catch {
                fail()
                throw BodyStreamError(error == .timedOut ? "request body stalled" : "client connection failed: \(error)")
            }
            if n == 0 {
                fail()
                throw BodyStreamError("client closed the connection before the end of the request body")
            }
        }
    }

    private func fail() {
        finished = true
        failed = true
    }
}
