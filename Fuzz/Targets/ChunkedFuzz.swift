// Fuzz target: ChunkedDecoder (with InboundBuffer and HTTPSerializer's chunk writer). The input is
// what follows a `Transfer-Encoding: chunked` head on a connection: a chunked body, possibly
// followed by the next message's bytes.
//
// Invariants checked (a violation stops the fuzzer through `invariant`):
//  1. Split independence: decoding the whole input at once, through a connection buffer in two reads
//     split at a position derived from the input (the server's loop: decodeChunked, consume), and
//     piece by piece straight from many small reads, all give the same outcome: complete with the
//     same bytes used and body, incomplete with the same body so far, or the same error after the
//     same body so far.
//  2. Consumption: an incomplete decode uses every byte it is given; a complete one uses no byte
//     after the final CRLF and, once complete, the decoder uses nothing more (and never throws).
//  3. Agreement with the reference model: complete exactly when the reference is, with the same
//     bytes used and body; incomplete with the same body so far; an error exactly when the
//     reference sees one.
//  4. Round trip: a decoded body re-encoded with HTTPSerializer.appendChunk (in pieces whose sizes
//     come from the input) and appendLastChunk decodes to the same body, using every byte.

enum ChunkedOutcome: Equatable, CustomStringConvertible {
    case complete(consumed: Int, body: [UInt8])
    case incomplete(body: [UInt8])
    case failed(HTTPParseError, body: [UInt8])

    var description: String {
        switch self {
        case .complete(let used, let body): "complete(consumed: \(used), body: \(escaped(body, limit: 120)))"
        case .incomplete(let body): "incomplete(body: \(escaped(body, limit: 120)))"
        case .failed(let e, let body): "failed(\(e), body so far: \(escaped(body, limit: 120)))"
        }
    }
}

/// One call with everything (invariant 2 checked here).
func decodeAtOnce(_ input: UnsafeRawBufferPointer, limits: HTTPParserLimits) -> ChunkedOutcome {
    var decoder = ChunkedDecoder(limits: limits)
    var body: [UInt8] = []
    let used: Int
    do throws(HTTPParseError) {
        used = try decoder.decode(input, into: &body)
    } catch {
        invariant(!decoder.isComplete, "decoder complete after throwing \(error)")
        return .failed(error, body: body)
    }
    invariant(used >= 0 && used <= input.count, "decode used \(used) of \(input.count) bytes")
    guard decoder.isComplete else {
        invariant(used == input.count, "incomplete decode used \(used) of \(input.count) bytes")
        return .incomplete(body: body)
    }
    // Once complete, nothing more is consumed: the rest belongs to the next message.
    let rest = UnsafeRawBufferPointer(rebasing: input[used...])
    let before = body
    do throws(HTTPParseError) {
        let more = try decoder.decode(rest, into: &body)
        invariant(more == 0 && body == before && decoder.isComplete, "complete decoder used \(more) more bytes")
    } catch {
        invariant(false, "complete decoder threw \(error) on the bytes after the body")
    }
    return .complete(consumed: used, body: body)
}

/// The server's loop: read into the connection buffer, decodeChunked (which consumes what was
/// used), stop when complete.
func decodeThroughBuffer(_ input: UnsafeRawBufferPointer, reads: [Range<Int>], limits: HTTPParserLimits) -> ChunkedOutcome {
    var feeder = Feeder(input, reads: reads)
    let (body, end) = readBody(.chunked, &feeder, limits: limits)
    switch end {
    case nil: return .complete(consumed: input.count - feeder.unconsumed, body: body)
    case .incompleteBody?: return .incomplete(body: body)
    case .failed(let error)?: return .failed(error, body: body)
    case let other?: fatalError("unexpected end \(other)")
    }
}

/// Piece by piece straight from the reads (no connection buffer): every piece must be used whole
/// until completion.
func decodeInPieces(_ input: UnsafeRawBufferPointer, reads: [Range<Int>], limits: HTTPParserLimits) -> ChunkedOutcome {
    var decoder = ChunkedDecoder(limits: limits)
    var body: [UInt8] = []
    var consumed = 0
    for r in reads {
        let piece = UnsafeRawBufferPointer(rebasing: input[r])
        let used: Int
        do throws(HTTPParseError) {
            used = try decoder.decode(piece, into: &body)
        } catch {
            return .failed(error, body: body)
        }
        consumed += used
        if decoder.isComplete { return .complete(consumed: consumed, body: body) }
        invariant(used == piece.count, "incomplete decoder used \(used) of a \(piece.count)-byte piece")
    }
    return .incomplete(body: body)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    var rng = FuzzRandom(input)
    let limits = fuzzLimits(&rng)
    let context = { "\(describe(limits)) input=\(escaped(input))" }

    let whole = decodeAtOnce(input, limits: limits)  // libFuzzer's exactly sized buffer

    let splitReads = Segmentation.oneSplit(size, &rng)
    let split = decodeThroughBuffer(input, reads: splitReads, limits: limits)
    invariant(split == whole, "split at \(splitReads.first?.upperBound ?? 0): \(split); at once: \(whole); \(context())")
    let manyReads = Segmentation.many(size, &rng)
    let many = decodeInPieces(input, reads: manyReads, limits: limits)
    invariant(many == whole, "\(manyReads.count) pieces (sizes \(manyReads.prefix(12).map(\.count))...): \(many); at once: \(whole); \(context())")

    switch (Ref.chunked(Array(input), limits: limits), whole) {
    case (.complete(let used, let body), .complete(let used2, let body2)):
        invariant(used == used2 && body == body2, "reference complete(\(used), \(escaped(body, limit: 120))), decoder \(whole); \(context())")
    case (.incomplete(let body), .incomplete(let body2)):
        invariant(body == body2, "reference incomplete with \(escaped(body, limit: 120)), decoder \(whole); \(context())")
    case (.error, .failed):
        break
    case (let ref, _):
        invariant(false, "reference \(ref), decoder \(whole); \(context())")
    }

    if case .complete(_, let body) = whole {
        var wire: [UInt8] = []
        var at = 0
        while at < body.count {
            let n = min(body.count - at, 1 + rng.below(rng.below(2) == 0 ? 8 : 4096))
            body[at..<(at + n)].withUnsafeBytes { HTTPSerializer.appendChunk($0, to: &wire) }
            at += n
        }
        HTTPSerializer.appendLastChunk(to: &wire)
        let again = wire.withUnsafeBytes { decodeAtOnce($0, limits: HTTPParserLimits()) }
        invariant(again == .complete(consumed: wire.count, body: body),
                  "re-encoded body \(escaped(wire)) decodes as \(again); \(context())")
    }
    return 0
}
