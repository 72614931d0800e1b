// Fuzz target: RESPParser (with InboundBuffer and RESPEncoder). The input is what a Redis server
// sends on one connection: any number of RESP2 replies, possibly ending in the middle of one.
//
// Invariants checked (a violation stops the fuzzer through `invariant`):
//  1. Split independence: the input in one read, in two reads split at a position derived from the
//     input, and in many small reads gives the same replies, then the same end: the same error, or
//     incomplete with the same bytes left unconsumed.
//  2. Round trip: every reply re-encoded with RESPEncoder parses back to itself (default limits),
//     using exactly its encoding; and when the input is valid UTF-8 (so simple strings and errors decode exactly),
//     the encodings of the replies are byte for byte the consumed prefix of the input (the parser
//     accepts only canonical forms).
//  3. Limits: no reply exceeds the limits in force (derived from the input: default or tiny).

enum RESPOutcome: Equatable, CustomStringConvertible {
    case failed(RESPParseError)
    case incomplete(leftover: Int)

    var description: String {
        switch self {
        case .failed(let e): "failed(\(e))"
        case .incomplete(let n): "incomplete(leftover: \(n))"
        }
    }
}

func respParse(_ input: UnsafeRawBufferPointer, reads: [Range<Int>], limits: RESPParser.Limits) -> ([RESPValue], RESPOutcome) {
    var parser = RESPParser(limits: limits)
    var buffer = InboundBuffer(capacity: 64)
    var values: [RESPValue] = []
    for r in reads {
        buffer.append(UnsafeRawBufferPointer(rebasing: input[r]))
        do throws(RESPParseError) {
            while let v = try parser.next(from: &buffer) { values.append(v) }
        } catch {
            return (values, .failed(error))
        }
    }
    return (values, .incomplete(leftover: buffer.readableCount))
}

func respCheckLimits(_ v: RESPValue, _ limits: RESPParser.Limits, depth: Int, count: inout Int) {
    count += 1
    switch v {
    case .bulkString(let b?): invariant(b.count <= limits.maxBulkBytes, "bulk of \(b.count) bytes over \(limits.maxBulkBytes)")
    case .simpleString(let s), .error(let s): invariant(s.utf8.count < limits.maxLineBytes * 3 + 1, "line too long")
    case .array(let items?):
        // Depth counts arrays with elements (an empty or null array opens no level).
        invariant(items.isEmpty || depth < limits.maxDepth, "nested deeper than \(limits.maxDepth)")
        invariant(items.count <= limits.maxArrayCount, "array of \(items.count) over \(limits.maxArrayCount)")
        for item in items { respCheckLimits(item, limits, depth: depth + 1, count: &count) }
    default: break
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    var rng = FuzzRandom(input, salt: 0x5245_5350)
    var limits = RESPParser.Limits()
    if rng.below(4) == 0 {
        limits.maxLineBytes = 1 + rng.below(64)
        limits.maxBulkBytes = rng.below(64)
        limits.maxArrayCount = 1 + rng.below(8)
        limits.maxDepth = 1 + rng.below(4)
        limits.maxReplyElements = 1 + rng.below(16)
    }
    let context = { "limits=\(limits) input=\(escaped(input))" }

    // 1. Split independence.
    let whole = respParse(input, reads: Segmentation.whole(size), limits: limits)
    let splitReads = Segmentation.oneSplit(size, &rng)
    let split = respParse(input, reads: splitReads, limits: limits)
    invariant(split.0 == whole.0 && split.1 == whole.1, "split: \(split); at once: \(whole); \(context())")
    let many = respParse(input, reads: Segmentation.many(size, &rng), limits: limits)
    invariant(many.0 == whole.0 && many.1 == whole.1, "many reads: \(many); at once: \(whole); \(context())")

    // 2. Round trip, and 3. limits.
    var encoded: [UInt8] = []
    for value in whole.0 {
        var count = 0
        respCheckLimits(value, limits, depth: 0, count: &count)
        invariant(count <= limits.maxReplyElements, "reply of \(count) values over \(limits.maxReplyElements); \(context())")
        let bytes = value.encoded
        // Default limits: a simple string with invalid UTF-8 decodes with U+FFFD (3 bytes each), so
        // its encoding may be longer than the input line a tiny limit accepted.
        var parser = RESPParser()
        var buffer = InboundBuffer(capacity: 64)
        buffer.append(bytes)
        do throws(RESPParseError) {
            let back = try parser.next(from: &buffer)
            invariant(back == value && buffer.isEmpty && !parser.isMidReply, "re-encoded \(value) parsed as \(String(describing: back)); \(context())")
        } catch {
            invariant(false, "re-encoded \(value) failed to parse: \(error); \(context())")
        }
        encoded += bytes
    }
    if String(validating: input, as: UTF8.self) != nil {
        let consumed: Int
        switch whole.1 {
        case .incomplete(let leftover): consumed = size - leftover
        case .failed: consumed = encoded.count  // the replies before the error
        }
        let prefix = Array(input.prefix(consumed))
        if case .incomplete = whole.1 {
            // What was consumed but is not a whole reply is the start of an unfinished one.
            invariant(Array(prefix.prefix(encoded.count)) == encoded, "replies re-encode differently from the input; \(context())")
        } else {
            invariant(prefix == encoded, "replies re-encode differently from the input; \(context())")
        }
    }
    return 0
}
