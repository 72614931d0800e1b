#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The helpers every fuzz target uses (invariant, FuzzRandom, Segmentation, escaped), in a file of
// their own because the resp target is built without the HTTP parser sources that
// Fuzz/Support/FuzzSupport.swift needs (Scripts/fuzz.sh: SUPPORT_SOURCES, RESP_SOURCES).
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

