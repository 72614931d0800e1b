// UpstreamClient's reads and writes on an exchange's pooled connection: writing the request
// (and a streamed body), reading the response head (skipping 1xx) and a whole body, each I/O
// error mapped to an ExchangeFailure. Separate from the exchange's control flow (HTTPClient.swift)
// so that each file holds one concern; moved as is.

import LBKitPolicy

extension UpstreamClient {
    // MARK: Exchange

    struct ExchangeFailure: Error {
        var clientError: UpstreamError
        /// No response byte arrived and the connection broke (EOF/reset) — the stale-pool shape.
        var isStaleConnectionSymptom: Bool
    }

    nonisolated(nonsending) func write(_ wire: [UInt8], on connection: PooledConnection, deadline: UInt64) async throws(ExchangeFailure) {
        do throws(SocketError) {
            try await connection.socket.write(wire, deadline: deadline)
        } catch {
            throw writeFailure(error)
        }
    }

    /// The exchange failure for a failed request write: a reset or closed pooled connection is
    /// the stale-pool shape.
    func writeFailure(_ error: SocketError) -> ExchangeFailure {
        let stale = error == .connectionReset || error == .closed
        return ExchangeFailure(clientError: mapIO(error, sent: true), isStaleConnectionSymptom: stale)
    }

    /// Streams a request body after its head: each part is written before the next is read.
    nonisolated(nonsending) func writeBody(_ stream: LBBodyStream, chunked: Bool, on connection: PooledConnection) async throws(ExchangeFailure) {
        var sent = 0
        while true {
            let chunk: [UInt8]?
            do {
                chunk = try await stream.next()
            } catch {
                throw ExchangeFailure(clientError: UpstreamError(kind: .requestBodyFailed(error.message), requestSent: true),
                                      isStaleConnectionSymptom: false)
            }
            let deadline = Self.deadline(after: configuration.bodyStallTimeout)
            guard let chunk else {
                if chunked { try await write(Array("0\r\n\r\n".utf8), on: connection, deadline: deadline) }
                if let length = stream.length, sent != length {
                    throw ExchangeFailure(clientError: UpstreamError(kind: .requestBodyFailed("body ended after \(sent) of \(length) bytes"), requestSent: true),
                                          isStaleConnectionSymptom: false)
                }
                return
            }
            if chunk.isEmpty { continue }
            sent += chunk.count
            if chunked {
                var framed: [UInt8] = []
                framed.reserveCapacity(chunk.count + 16)
                framed.append(contentsOf: String(chunk.count, radix: 16).utf8)
                framed.append(13); framed.append(10)
                framed.append(contentsOf: chunk)
                framed.append(13); framed.append(10)
                try await write(framed, on: connection, deadline: deadline)
            } else {
                try await write(chunk, on: connection, deadline: deadline)
            }
        }
    }

    /// Reads the final response head (interim 1xx responses are skipped). Returns nil when no byte
    /// arrived by `answerBy` (the exchange stays usable); throws on errors and at `deadline`.
    nonisolated(nonsending) func readHead(_ connection: PooledConnection, method: String, deadline: UInt64, answerBy: UInt64,
                          upgrade: Bool, started: inout Bool) async throws(ExchangeFailure) -> ParsedResponseHead? {
        var scanFrom = 0
        let limits = configuration.limits
        while true {
            if !connection.buffer.isEmpty {
                started = true
                let parsed: ParsedResponseHead?
                do throws(HTTPParseError) {
                    parsed = try connection.buffer.parseResponseHead(method: method, limits: limits, scanFrom: scanFrom)
                } catch {
                    throw failure(.malformedResponse(error.reason))
                }
                if let parsed {
                    if parsed.head.status == 101 {
                        // Final, never interim (RFC 9110 15.2.2): the connection now speaks
                        // another protocol. Only acceptable when we asked for it.
                        guard upgrade else { throw failure(.malformedResponse("101 Switching Protocols to a request that did not ask to upgrade")) }
                        return parsed
                    }
                    if parsed.head.status >= 100 && parsed.head.status < 200 {
                        scanFrom = 0
                        continue  // 100 Continue / 103 Early Hints: skip interim responses
                    }
                    return parsed
                }
                scanFrom = connection.buffer.readableCount
            }
            let soft = !started && answerBy < deadline
            var n: Int
            do throws(SocketError) {
                // readNow and waitReadable in line: no async call of its own per response.
                while true {
                    if let ready = try connection.socket.readNow(into: &connection.buffer) {
                        n = ready
                        break
                    }
                    try await connection.socket.waitReadable(holding: &connection.buffer, deadline: soft ? answerBy : deadline, idle: false)
                }
            } catch {
                if soft && error == .timedOut { return nil }
                throw ExchangeFailure(clientError: mapIO(error, sent: true),
                                      isStaleConnectionSymptom: !started && error == .connectionReset)
            }
            if n == 0 {
                throw ExchangeFailure(clientError: UpstreamError(kind: .connectionReset, requestSent: true),
                                      isStaleConnectionSymptom: !started)
            }
        }
    }

    /// Reads a whole `Content-Length` body (small, or already in the buffer).
    nonisolated(nonsending) func readBody(_ connection: PooledConnection, framing: HTTPBodyFraming,
                          deadline: UInt64) async throws(ExchangeFailure) -> [UInt8] {
        guard case .contentLength(let length) = framing else { return [] }
        if connection.buffer.readableCount >= length { return connection.buffer.take(length) }
        var body: [UInt8] = []
        body.append(contentsOf: connection.buffer.take(length))
        while body.count < length {
            try await readMore(connection, deadline: deadline, eofIsError: true)
            body.append(contentsOf: connection.buffer.take(length - body.count))
        }
        return body
    }

    /// Reads more bytes; returns false at EOF when `eofIsError` is false.
    @discardableResult
    nonisolated(nonsending) private func readMore(_ connection: PooledConnection, deadline: UInt64, eofIsError: Bool) async throws(ExchangeFailure) -> Bool {
        let n: Int
        do {
            n = try await connection.socket.read(into: &connection.buffer, deadline: deadline)
        } catch {
            throw ExchangeFailure(clientError: mapIO(error, sent: true), isStaleConnectionSymptom: false)
        }
        if n == 0 {
            if eofIsError { throw failure(.connectionReset) }
            return false
        }
        return true
    }

    func failure(_ kind: UpstreamError.Kind) -> ExchangeFailure {
        ExchangeFailure(clientError: UpstreamError(kind: kind, requestSent: true), isStaleConnectionSymptom: false)
    }

    private func mapIO(_ error: SocketError, sent: Bool) -> UpstreamError {
        switch error {
        case .timedOut: UpstreamError(kind: .timedOut, requestSent: sent)
        default: UpstreamError(kind: .connectionReset, requestSent: sent)
        }
    }
}
