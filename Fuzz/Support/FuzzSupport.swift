#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Shared by the three HTTP fuzz targets. Scripts/fuzz.sh compiles each target as ONE module made of
// the LBKitHTTP parser sources, Fuzz/Common/FuzzCommon.swift (invariant, FuzzRandom, Segmentation,
// escaped), Fuzz/Support/*.swift and one Fuzz/Targets/*.swift file, so everything here may use
// `internal` and `package` declarations of LBKitHTTP (InboundBuffer+HTTP, HTTP1Scan...).
/// Whether `maxHeadBytes` may go below 18 (`LBKIT_FUZZ_TINY_LIMITS=1`). Off by default: below 18,
/// the 8 leading empty lines a request may start with no longer fit in the limit and the request
/// parser answers 400 or 431 for the same bytes depending on how they arrive (a known finding,
/// Fuzz/findings/README.md); with the switch on, that finding reproduces.
let tinyHeadLimits: Bool = getenv("LBKIT_FUZZ_TINY_LIMITS").map { String(cString: $0) == "1" } ?? false

/// Parser limits for one input: usually the defaults, sometimes small ones so that the limit paths
/// (431, chunk-line and trailer limits) are exercised with small inputs too.
func fuzzLimits(_ rng: inout FuzzRandom) -> HTTPParserLimits {
    var limits = HTTPParserLimits()
    if rng.below(4) == 0 {
        let head = rng.below(700)
        limits.maxHeadBytes = head < 18 && !tinyHeadLimits ? head + 18 : head
        limits.maxHeaderCount = rng.below(12)
        limits.maxChunkLineBytes = rng.below(48)
        limits.maxTrailerBytes = rng.below(256)
    }
    return limits
}

func describe(_ limits: HTTPParserLimits) -> String {
    "limits(head \(limits.maxHeadBytes), fields \(limits.maxHeaderCount), chunk line \(limits.maxChunkLineBytes), trailers \(limits.maxTrailerBytes))"
}

/// An exactly sized heap copy of `bytes`: a parser reading one byte past either end of it is caught
/// by AddressSanitizer (slices of InboundBuffer storage or of Swift arrays have slack around them).
func withExactCopy<R>(_ bytes: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> R) -> R {
    let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
    defer { copy.deallocate() }
    if bytes.count > 0 { copy.copyMemory(from: bytes) }
    return body(UnsafeRawBufferPointer(rebasing: copy[0..<bytes.count]))
}

/// One header field, comparable.
struct Field: Equatable, CustomStringConvertible {
    var name: String
    var value: String
    var description: String { "\(name): \(value)" }
}

func fieldList(_ headers: HeaderFields) -> [Field] {
    headers.fields.map { Field(name: $0.name, value: $0.value) }
}

/// Delivers the input to an InboundBuffer read by read, as a socket would.
struct Feeder {
    let input: UnsafeRawBufferPointer
    let reads: [Range<Int>]
    private var nextRead = 0
    private(set) var fed = 0
    var buffer = InboundBuffer(capacity: 64)  // small: growth and compaction happen often

    init(_ input: UnsafeRawBufferPointer, reads: [Range<Int>]) {
        self.input = input
        self.reads = reads
    }

    /// Appends the next read; false at end of stream.
    mutating func read() -> Bool {
        guard nextRead < reads.count else { return false }
        let r = reads[nextRead]
        nextRead += 1
        buffer.append(UnsafeRawBufferPointer(rebasing: input[r]))
        fed += r.count
        return true
    }

    /// Bytes received or still to come that nothing consumed.
    var unconsumed: Int { input.count - fed + buffer.readableCount }

    /// The unread bytes of the buffer as an array.
    var readable: [UInt8] { buffer.withReadableBytes { Array($0) } }
}

/// How a simulated connection ended.
enum StreamEnd: Equatable {
    /// All input consumed at a message boundary.
    case drained
    /// The connection is closed after a message (keep-alive off or body until close); `leftover`
    /// bytes received are ignored.
    case closed(leftover: Int)
    /// The input ended inside a head; `buffered` bytes are waiting.
    case incompleteHead(buffered: Int)
    /// The input ended inside a body (the last event holds the body bytes received so far).
    case incompleteBody
    /// A head or a chunked body was rejected.
    case failed(HTTPParseError)
}

/// Reads a body with `framing` from `feeder` the way the server and the client do. Returns the body
/// and nil when complete, or the bytes so far and how the stream ended.
func readBody(_ framing: HTTPBodyFraming, _ feeder: inout Feeder, limits: HTTPParserLimits) -> ([UInt8], StreamEnd?) {
    switch framing {
    case .none:
        return ([], nil)
    case .contentLength(let length):
        invariant(length >= 0, "negative Content-Length \(length)")
        var body = feeder.buffer.take(length)
        while body.count < length {
            guard feeder.read() else { return (body, .incompleteBody) }
            body.append(contentsOf: feeder.buffer.take(length - body.count))
        }
        return (body, nil)
    case .chunked:
        var decoder = ChunkedDecoder(limits: limits)
        var body: [UInt8] = []
        while true {
            if !feeder.buffer.isEmpty {
                do throws(HTTPParseError) {
                    try feeder.buffer.decodeChunked(&decoder, into: &body)
                } catch {
                    return (body, .failed(error))
                }
                if decoder.isComplete { return (body, nil) }
                invariant(feeder.buffer.isEmpty, "chunked decoder left \(feeder.buffer.readableCount) bytes unconsumed before completion")
            }
            guard feeder.read() else { return (body, .incompleteBody) }
        }
    case .untilClose:
        var body = feeder.buffer.take(feeder.buffer.readableCount)
        while feeder.read() { body.append(contentsOf: feeder.buffer.take(feeder.buffer.readableCount)) }
        return (body, .closed(leftover: 0))
    }
}

/// Whether the `headLength` bytes at the start of `bytes` end with CRLFCRLF (or are exactly the
/// CRLF-terminated start line plus CRLF, which is the same thing).
func endsWithBlankLine(_ bytes: UnsafeRawBufferPointer, headLength: Int) -> Bool {
    headLength >= 4 && headLength <= bytes.count
        && bytes[headLength - 4] == 0x0D && bytes[headLength - 3] == 0x0A
        && bytes[headLength - 2] == 0x0D && bytes[headLength - 1] == 0x0A
}
