// Fuzz target: HTTPRequestHeadParser (with InboundBuffer, ChunkedDecoder and HTTPSerializer), driven
// the way HTTPServerConnection drives it: the input is the byte stream a client sends on one
// connection (possibly several pipelined requests with bodies).
//
// Invariants checked (a violation stops the fuzzer through `invariant`):
//  1. Segmentation independence: the stream delivered in one read, in two reads split at a position
//     derived from the input, and in many small reads (resuming the head scan with `scanFrom` =
//     the previous buffer size, exactly like the server) yields the same requests (method, target,
//     version, fields, framing, keep-alive, 100-continue, head length, body) and the same end
//     (drained / closed with N bytes left / incomplete / the same error).
//  2. Agreement with the reference model (Fuzz/Support/Reference.swift) on every head: accept,
//     incomplete, or reject with the same status; when accepted, the method, target and every
//     field name and value are byte-for-byte the ones on the wire.
//  3. Parsing directly from an exactly sized copy (AddressSanitizer sees any read past either end)
//     gives the same result as parsing from the connection buffer.
//  4. Accepted heads are well formed: head length within the buffer and `maxHeadBytes`, ending in
//     CRLFCRLF, framing never `.untilClose`.
//  5. Round trip: serializing an accepted head with HTTPSerializer and parsing it again gives the
//     same head, framing, keep-alive and 100-continue, with head length = serialized size.

struct RequestEvent: Equatable, CustomStringConvertible {
    var method: String
    var target: String
    var version: HTTPWireVersion
    var fields: [Field]
    var framing: HTTPBodyFraming
    var keepAlive: Bool
    var expectsContinue: Bool
    var headLength: Int
    var body: [UInt8] = []

    init(_ p: ParsedRequestHead) {
        method = p.head.method
        target = p.head.target
        version = p.head.version
        fields = fieldList(p.head.headers)
        framing = p.framing
        keepAlive = p.keepAlive
        expectsContinue = p.expectsContinue
        headLength = p.headLength
    }

    var description: String {
        "\(method) \(target) \(version) \(fields) framing=\(framing) keepAlive=\(keepAlive) expect=\(expectsContinue) headLength=\(headLength) body=\(escaped(body, limit: 80))"
    }
}

enum RequestHeadOutcome: Equatable {
    case incomplete
    case failed(HTTPParseError)
    case parsed(RequestEvent)
}

struct ServerRun: Equatable {
    var events: [RequestEvent]
    var end: StreamEnd
}

func parseRequestHead(_ bytes: UnsafeRawBufferPointer, limits: HTTPParserLimits) -> RequestHeadOutcome {
    do throws(HTTPParseError) {
        guard let parsed = try HTTPRequestHeadParser.parse(bytes, limits: limits) else { return .incomplete }
        return .parsed(RequestEvent(parsed))
    } catch {
        return .failed(error)
    }
}

/// One connection of HTTPServerConnection: read head (resuming with scanFrom), read body, repeat
/// while keep-alive. With `check`, every head attempt is also checked against invariants 2-5.
func serve(_ input: UnsafeRawBufferPointer, reads: [Range<Int>], limits: HTTPParserLimits, check: Bool) -> ServerRun {
    var feeder = Feeder(input, reads: reads)
    var events: [RequestEvent] = []
    while true {
        var scanFrom = 0
        var parsed: ParsedRequestHead?
        while true {
            if !feeder.buffer.isEmpty {
                let before = check ? feeder.readable : []
                let outcome: RequestHeadOutcome
                do throws(HTTPParseError) {
                    parsed = try feeder.buffer.parseRequestHead(limits: limits, scanFrom: scanFrom)
                    outcome = parsed.map { .parsed(RequestEvent($0)) } ?? .incomplete
                } catch {
                    outcome = .failed(error)
                }
                if check { checkRequestHead(before, limits: limits, outcome: outcome, scanFrom: scanFrom) }
                if case .failed(let error) = outcome { return ServerRun(events: events, end: .failed(error)) }
                if parsed != nil { break }
                scanFrom = feeder.buffer.readableCount
            }
            if !feeder.read() {
                return ServerRun(
                    events: events,
                    end: feeder.buffer.isEmpty ? .drained : .incompleteHead(buffered: feeder.buffer.readableCount))
            }
        }
        let head = parsed!
        var event = RequestEvent(head)
        let (body, end) = readBody(head.framing, &feeder, limits: limits)
        event.body = body
        events.append(event)
        if let end { return ServerRun(events: events, end: end) }
        if !head.keepAlive { return ServerRun(events: events, end: .closed(leftover: feeder.unconsumed)) }
    }
}

func checkRequestHead(_ bytes: [UInt8], limits: HTTPParserLimits, outcome: RequestHeadOutcome, scanFrom: Int) {
    let context = { "\(describe(limits)) scanFrom=\(scanFrom) input=\(escaped(bytes))" }

    // 3. Exactly sized copy, fresh scan.
    let direct = bytes.withUnsafeBytes { b in withExactCopy(b) { parseRequestHead($0, limits: limits) } }
    invariant(direct == outcome, "buffer parse \(outcome) != direct parse \(direct); \(context())")

    // 2. Reference model.
    switch (Ref.request(bytes, limits: limits), outcome) {
    case (.incomplete, .incomplete):
        break
    case (.reject(let status), .failed(let error)):
        invariant(status == error.status, "reference rejects with \(status), parser with \(error) (\(error.status)); \(context())")
    case (.accept(let r), .parsed(let e)):
        invariant(Array(e.method.utf8) == Array(r.method), "method \(escaped(e.method.utf8)) != wire \(escaped(r.method)); \(context())")
        invariant(Array(e.target.utf8) == Array(r.target), "target \(escaped(e.target.utf8)) != wire \(escaped(r.target)); \(context())")
        invariant(e.version == HTTPWireVersion(major: 1, minor: r.minor), "version \(e.version) != 1.\(r.minor); \(context())")
        invariant(e.fields.count == r.fields.count, "\(e.fields.count) fields, reference \(r.fields.count); \(context())")
        for (f, (name, value)) in zip(e.fields, r.fields) {
            invariant(Array(f.name.utf8) == Array(name) && Array(f.value.utf8) == Array(value),
                      "field \(escaped(f.name.utf8)): \(escaped(f.value.utf8)) != wire \(escaped(name)): \(escaped(value)); \(context())")
        }
        invariant(e.framing == r.framing, "framing \(e.framing), reference \(r.framing); \(context())")
        invariant(e.keepAlive == r.keepAlive, "keepAlive \(e.keepAlive), reference \(r.keepAlive); \(context())")
        invariant(e.expectsContinue == r.expectsContinue, "expectsContinue \(e.expectsContinue), reference \(r.expectsContinue); \(context())")
        invariant(e.headLength == r.headLength, "headLength \(e.headLength), reference \(r.headLength); \(context())")
    case (let ref, _):
        invariant(false, "parser: \(outcome); reference: \(ref); \(context())")
    }

    guard case .parsed(let e) = outcome else { return }

    // 4. Shape of an accepted head.
    invariant(e.headLength <= bytes.count && e.headLength <= limits.maxHeadBytes,
              "headLength \(e.headLength) beyond buffer \(bytes.count) or limit; \(context())")
    invariant(bytes.withUnsafeBytes { endsWithBlankLine($0, headLength: e.headLength) }, "head does not end with CRLFCRLF; \(context())")
    invariant(e.framing != .untilClose, "request framing .untilClose; \(context())")

    // 5. Serialize, parse again.
    let head = RequestHead(
        method: e.method, target: e.target, version: e.version,
        headers: HeaderFields(e.fields.map { ($0.name, $0.value) }))
    var wire: [UInt8] = []
    HTTPSerializer.appendRequestHead(head, to: &wire)
    var relaxed = limits
    relaxed.maxHeadBytes = max(limits.maxHeadBytes, wire.count)
    let again = wire.withUnsafeBytes { b in withExactCopy(b) { parseRequestHead($0, limits: relaxed) } }
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

    // libFuzzer's own buffer is exactly sized: parse it directly first.
    _ = parseRequestHead(input, limits: limits)

    let whole = serve(input, reads: Segmentation.whole(size), limits: limits, check: true)
    let splitReads = Segmentation.oneSplit(size, &rng)
    let split = serve(input, reads: splitReads, limits: limits, check: false)
    invariant(split == whole, """
        split at \(splitReads.first?.upperBound ?? 0) differs from one read; \(describe(limits))
          one read:  \(whole)
          two reads: \(split)
          input: \(escaped(UnsafeRawBufferPointer(input)))
        """)
    let manyReads = Segmentation.many(size, &rng)
    let many = serve(input, reads: manyReads, limits: limits, check: false)
    invariant(many == whole, """
        \(manyReads.count) reads (sizes \(manyReads.prefix(12).map(\.count))...) differ from one read; \(describe(limits))
          one read:   \(whole)
          many reads: \(many)
          input: \(escaped(UnsafeRawBufferPointer(input)))
        """)
    return 0
}
