#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Shared by the three fuzz targets. Scripts/fuzz.sh compiles each target as ONE module made of the
// LBKitHTTP parser sources, Fuzz/Support/*.swift and one Fuzz/Targets/*.swift file, so everything
// here may use `internal` and `package` declarations of LBKitHTTP (InboundBuffer+HTTP, HTTP1Scan...).
//
// Every choice a target makes (where to split the input, which limits, which request method) is a
// pure function of the input bytes, so a saved crash input reproduces exactly.

/// Stops the process when an invariant does not hold: libFuzzer reports the trap as a crash and
/// saves the input as `crash-<sha1>`.
@inline(never)
func invariant(
    _ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
    file: StaticString = #fileID, line: UInt = #line
) {
    if !condition() {
        fatalError("FUZZ INVARIANT VIOLATED: \(message())", file: file, line: line)
    }
}

/// Deterministic pseudo-random choices seeded from the input (FNV-1a, then splitmix64).
struct FuzzRandom {
    private var state: UInt64

    init(_ bytes: UnsafeRawBufferPointer, salt: UInt64 = 0) {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ salt
        for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        state = h
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A value in `0..<n` (0 when n <= 0).
    mutating func below(_ n: Int) -> Int {
        n <= 0 ? 0 : Int(next() % UInt64(n))
    }
}

/// How the bytes of one input arrive from the socket: the reads, in order (never empty: a read of
/// 0 bytes means end of stream to the server and the client).
enum Segmentation {
    /// One read with everything.
    static func whole(_ count: Int) -> [Range<Int>] {
        count == 0 ? [] : [0..<count]
    }

    /// Two reads, split at a position derived from the input.
    static func oneSplit(_ count: Int, _ rng: inout FuzzRandom) -> [Range<Int>] {
        let k = rng.below(count + 1)
        return [0..<k, k..<count].filter { !$0.isEmpty }
    }

    /// Many reads: one byte at a time, a fixed step, or random sizes (chosen from the input).
    static func many(_ count: Int, _ rng: inout FuzzRandom) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var at = 0
        let mode = rng.below(3)
        let step = mode == 0 ? (count <= 1024 ? 1 : 2) : 1 + rng.below(16)
        while at < count {
            let n = mode == 2 ? 1 + rng.below(64) : step
            let end = min(count, at + n)
            out.append(at..<end)
            at = end
        }
        return out
    }
}

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

/// `bytes` as a quoted, escaped string (truncated), for invariant messages.
func escaped(_ bytes: some Collection<UInt8>, limit: Int = 600) -> String {
    var out = "\""
    for (n, b) in bytes.enumerated() {
        if n == limit { out += "...(\(bytes.count) bytes)"; break }
        switch b {
        case 0x0D: out += "\\r"
        case 0x0A: out += "\\n"
        case 0x09: out += "\\t"
        case 0x22: out += "\\\""
        case 0x5C: out += "\\\\"
        case 0x20...0x7E: out.unicodeScalars.append(Unicode.Scalar(b))
        default:
            let hex = String(b, radix: 16)
            out += "\\x" + (hex.count == 1 ? "0" + hex : hex)
        }
    }
    return out + "\""
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
