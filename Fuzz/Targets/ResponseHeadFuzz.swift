// Fuzz target: HTTPResponseHeadParser (with InboundBuffer, ChunkedDecoder and HTTPSerializer), driven
// the way HTTPClient reads an upstream connection: the input is what a backend sends on one pooled
// connection (interim 1xx responses, final responses with bodies, possibly several exchanges while
// keep-alive holds). The method of each exchange's request (GET, HEAD, POST, CONNECT, DELETE) is
// derived from the input.
//
// Invariants checked (a violation stops the fuzzer through `invariant`):
//  1. Segmentation independence: one read, two reads split at a position derived from the input,
//     many small reads (resuming with `scanFrom` = the previous buffer size, back to 0 after a 1xx,
//     exactly like the client) give the same responses (status, reason, version, fields, framing,
//     keep-alive, head length, body) and the same end.
//  2. Agreement with the reference model on every head (accept / incomplete / reject with the same
//     status; accepted: fields byte-for-byte as on the wire, framing, keep-alive, head length).
//  3. Parsing an exactly sized copy gives the same result as parsing from the connection buffer.
//  4. Accepted heads: length within the buffer and `maxHeadBytes`, ending in CRLFCRLF; `.untilClose`
//     and TE+CL never keep the connection alive; 1xx/204/304/HEAD never have a body.
//  5. Round trip through HTTPSerializer.appendResponseHead gives the same head, framing and keep-alive.

let responseMethods = ["GET", "HEAD", "POST", "CONNECT", "DELETE"]

struct ResponseEvent: Equatable, CustomStringConvertible {
    var status: Int
    var reason: String
    var version: HTTPWireVersion
    var fields: [Field]
    var framing: HTTPBodyFraming
    var keepAlive: Bool
    var headLength: Int
    var method = ""
    var body: [UInt8] = []

    init(_ p: ParsedResponseHead) {
        status = p.head.status
        reason = p.head.reason
        version = p.head.version
        fields = fieldList(p.head.headers)
        framing = p.framing
        keepAlive = p.keepAlive
        headLength = p.headLength
    }

    var description: String {
        "[\(method)] \(version) \(status) \(escaped(reason.utf8, limit: 80)) \(fields) framing=\(framing) keepAlive=\(keepAlive) headLength=\(headLength) body=\(escaped(body, limit: 80))"
    }
}

enum ResponseHeadOutcome: Equatable {
    case incomplete
    case failed(HTTPParseError)
    case parsed(ResponseEvent)
}

struct ClientRun: Equatable {
    var events: [ResponseEvent]
    var end: StreamEnd
}

func parseResponseHead(_ bytes: UnsafeRawBufferPointer, method: String, limits: HTTPParserLimits) -> ResponseHeadOutcome {
    do throws(HTTPParseError) {
        guard let parsed = try HTTPResponseHeadParser.parse(bytes, requestMethod: method, limits: limits) else {
            return .incomplete
        }
        return .parsed(ResponseEvent(parsed))
    } catch {
        return .failed(error)
    }
}

/// HTTPClient's readHead/readBody on one pooled connection, exchange after exchange while the
/// responses keep it alive. With `check`, every head attempt is checked against invariants 2-5.
func exchange(
    _ input: UnsafeRawBufferPointer, reads: [Range<Int>], limits: HTTPParserLimits, methodSeed: Int, check: Bool
) -> ClientRun {
    var feeder = Feeder(input, reads: reads)
    var events: [ResponseEvent] = []
    var exchangeIndex = 0
    while true {
        let method = responseMethods[(methodSeed &+ exchangeIndex) % responseMethods.count]
        var scanFrom = 0
        var final: ParsedResponseHead?
        while final == nil {
            if !feeder.buffer.isEmpty {
                let before = check ? feeder.readable : []
                let parsed: ParsedResponseHead?
                let outcome: ResponseHeadOutcome
                do throws(HTTPParseError) {
                    parsed = try feeder.buffer.parseResponseHead(method: method, limits: limits, scanFrom: scanFrom)
                    outcome = parsed.map { .parsed(ResponseEvent($0)) } ?? .incomplete
                } catch {
                    parsed = nil
                    outcome = .failed(error)
                }
                if check { checkResponseHead(before, method: method, limits: limits, outcome: outcome) }
                if case .failed(let error) = outcome { return ClientRun(events: events, end: .failed(error)) }
                if let parsed {
                    if parsed.head.status >= 100 && parsed.head.status < 200 {
                        var interim = ResponseEvent(parsed)  // skipped by the client, recorded here
                        interim.method = method
                        events.append(interim)
                        scanFrom = 0
                        continue
                    }
                    final = parsed
                    break
                }
                scanFrom = feeder.buffer.readableCount
            }
            if !feeder.read() {
                return ClientRun(
                    events: events,
                    end: feeder.buffer.isEmpty ? .drained : .incompleteHead(buffered: feeder.buffer.readableCount))
            }
        }
        let head = final!
        var event = ResponseEvent(head)
        event.method = method
        let (body, end) = readBody(head.framing, &feeder, limits: limits)
        event.body = body
        events.append(event)
        if let end { return ClientRun(events: events, end: end) }
        if !head.keepAlive { return ClientRun(events: events, end: .closed(leftover: feeder.unconsumed)) }
        exchangeIndex += 1
    }
}

func checkResponseHead(_ bytes: [UInt8], method: String, limits: HTTPParserLimits, outcome: ResponseHeadOutcome) {
    let context = { "method=\(method) \(describe(limits)) input=\(escaped(bytes))" }

    // 3. Exactly sized copy.
    let direct = bytes.withUnsafeBytes { b in withExactCopy(b) { parseResponseHead($0, method: method, limits: limits) } }
    invariant(direct == outcome, "buffer parse \(outcome) != direct parse \(direct); \(context())")

    // 2. Reference model.
    switch (Ref.response(bytes, method: method, limits: limits), outcome) {
    case (.incomplete, .incomplete):
        break
    case (.reject(let status), .failed(let error)):
        invariant(status == error.status, "reference rejects with \(status), parser with \(error) (\(error.status)); \(context())")
    case (.accept(let r), .parsed(let e)):
        invariant(e.version == HTTPWireVersion(major: 1, minor: r.minor), "version \(e.version) != 1.\(r.minor); \(context())")
        invariant(e.status == r.status, "status \(e.status), reference \(r.status); \(context())")
        // obs-text in a reason phrase need not be UTF-8: compare decoded text.
        invariant(e.reason == String(decoding: r.reason, as: UTF8.self), "reason \(escaped(e.reason.utf8)) != wire \(escaped(r.reason)); \(context())")
        invariant(e.fields.count == r.fields.count, "\(e.fields.count) fields, reference \(r.fields.count); \(context())")
        for (f, (name, value)) in zip(e.fields, r.fields) {
            invariant(Array(f.name.utf8) == Array(name) && Array(f.value.utf8) == Array(value),
                      "field \(escaped(f.name.utf8)): \(escaped(f.value.utf8)) != wire \(escaped(name)): \(escaped(value)); \(context())")
        }
        invariant(e.framing == r.framing, "framing \(e.framing), reference \(r.framing); \(context())")
        invariant(e.keepAlive == r.keepAlive, "keepAlive \(e.keepAlive), reference \(r.keepAlive); \(context())")
        invariant(e.headLength == r.headLength, "headLength \(e.headLength), reference \(r.headLength); \(context())")
    case (let ref, _):
        invariant(false, "parser: \(outcome); reference: \(ref); \(context())")
    }

    guard case .parsed(let e) = outcome else { return }

    // 4. Shape and framing of an accepted head.
    invariant(e.headLength <= bytes.count && e.headLength <= limits.maxHeadBytes,
              "headLength \(e.headLength) beyond buffer \(bytes.count) or limit; \(context())")
    invariant(bytes.withUnsafeBytes { endsWithBlankLine($0, headLength: e.headLength) }, "head does not end with CRLFCRLF; \(context())")
    invariant(e.framing != .untilClose || !e.keepAlive, "untilClose with keep-alive; \(context())")
    if method == "HEAD" || e.status < 200 || e.status == 204 || e.status == 304 {
        invariant(e.framing == .none, "\(method) -> \(e.status) with framing \(e.framing); \(context())")
    }
    let hasTE = e.fields.contains { HeaderFields.namesEqual($0.name, "transfer-encoding") }
    let hasCL = e.fields.contains { HeaderFields.namesEqual($0.name, "content-length") }
    if hasTE && hasCL { invariant(!e.keepAlive, "Transfer-Encoding with Content-Length kept alive; \(context())") }

    // 5. Serialize, parse again.
    let head = ResponseHead(
        status: e.status, reason: e.reason, version: e.version,
        headers: HeaderFields(e.fields.map { ($0.name, $0.value) }))
    var wire: [UInt8] = []
    HTTPSerializer.appendResponseHead(head, to: &wire)
    var relaxed = limits
    relaxed.maxHeadBytes = max(limits.maxHeadBytes, wire.count)
    let again = wire.withUnsafeBytes { b in withExactCopy(b) { parseResponseHead($0, method: method, limits: relaxed) } }
    var expected = e
    expected.headLength = wire.count
    invariant(again == .parsed(expected),
              "round trip: \(escaped(wire)) parses as \(again), expected \(expected); \(context())")
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    var rng = FuzzRandom(input)
    let limits = fuzzLimits(&rng)
    let methodSeed = rng.below(responseMethods.count)

    _ = parseResponseHead(input, method: responseMethods[methodSeed], limits: limits)

    let whole = exchange(input, reads: Segmentation.whole(size), limits: limits, methodSeed: methodSeed, check: true)
    let splitReads = Segmentation.oneSplit(size, &rng)
    let split = exchange(input, reads: splitReads, limits: limits, methodSeed: methodSeed, check: false)
    invariant(split == whole, """
        split at \(splitReads.first?.upperBound ?? 0) differs from one read; \(describe(limits))
          one read:  \(whole)
          two reads: \(split)
          input: \(escaped(UnsafeRawBufferPointer(input)))
        """)
    let manyReads = Segmentation.many(size, &rng)
    let many = exchange(input, reads: manyReads, limits: limits, methodSeed: methodSeed, check: false)
    invariant(many == whole, """
        \(manyReads.count) reads (sizes \(manyReads.prefix(12).map(\.count))...) differ from one read; \(describe(limits))
          one read:   \(whole)
          many reads: \(many)
          input: \(escaped(UnsafeRawBufferPointer(input)))
        """)
    return 0
}
