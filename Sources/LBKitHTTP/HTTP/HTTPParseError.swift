/// Size limits applied by the HTTP/1.x parsers and the chunked decoder.
///
/// ```swift
/// var limits = HTTPParserLimits()
/// limits.maxHeadBytes = 8 * 1024
/// let parsed = try HTTPRequestHeadParser.parse(bytes, limits: limits)
/// ```
public struct HTTPParserLimits: Sendable {
    /// The largest accepted head: the bytes from the start of the buffer (including any skipped
    /// leading empty lines) to the end of the final CRLFCRLF. Larger heads throw
    /// ``HTTPParseError/headTooLarge``.
    ///
    /// ```swift
    /// limits.maxHeadBytes = 32 * 1024
    /// ```
    public var maxHeadBytes: Int = 16 * 1024

    /// The largest number of header fields (or trailer fields) in one message; more throw
    /// ``HTTPParseError/headTooLarge``.
    ///
    /// ```swift
    /// limits.maxHeaderCount = 50
    /// ```
    public var maxHeaderCount: Int = 100

    /// The longest accepted chunk-size line (hex size plus chunk extensions, without its CRLF);
    /// longer lines throw ``HTTPParseError/malformed(_:)``.
    ///
    /// ```swift
    /// limits.maxChunkLineBytes = 1024
    /// ```
    public var maxChunkLineBytes: Int = 4096

    /// The largest accepted trailer section (all trailer lines with their CRLFs plus the final CRLF);
    /// larger sections throw ``HTTPParseError/headTooLarge``.
    ///
    /// ```swift
    /// limits.maxTrailerBytes = 4096
    /// ```
    public var maxTrailerBytes: Int = 16 * 1024

    /// Creates the default limits (16 KiB head, 100 fields, 4 KiB chunk line, 16 KiB trailers).
    ///
    /// ```swift
    /// let limits = HTTPParserLimits()
    /// ```
    public init() {}
}

/// Why an HTTP/1.x message could not be parsed.
///
/// Each case maps to the status a server answers with (``status``) and a short human text
/// (``reason``) suitable for a JSON error body.
///
/// ```swift
/// do {
///     _ = try HTTPRequestHeadParser.parse(bytes, limits: HTTPParserLimits())
/// } catch {
///     print(error.status, error.reason)  // 400 "missing Host"
/// }
/// ```
package enum HTTPParseError: Error, Equatable, Sendable {
    /// The head (or trailer section) exceeds the configured limits: 431 on the request side
    /// (a proxy reports 502 when an upstream response is too large).
    ///
    /// ```swift
    /// if error == .headTooLarge { status = 431 }
    /// ```
    case headTooLarge

    /// The message violates the HTTP/1.1 grammar or framing rules (400). The string is a short
    /// human reason, e.g. `"Content-Length and Transfer-Encoding together"`.
    ///
    /// ```swift
    /// if case .malformed(let why) = error { print(why) }
    /// ```
    case malformed(String)

    /// The version is `HTTP/x.y` with digits other than 1.0 or 1.1 (505).
    ///
    /// ```swift
    /// if error == .unsupportedVersion { status = 505 }
    /// ```
    case unsupportedVersion

    /// Transfer codings other than `chunked` were applied (501); the string is the received
    /// Transfer-Encoding value, e.g. `"gzip, chunked"`.
    ///
    /// ```swift
    /// if case .unsupportedTransferCoding(let te) = error { print(te) }
    /// ```
    case unsupportedTransferCoding(String)

    /// The response status a server sends for this error: 431, 400, 505 or 501.
    ///
    /// ```swift
    /// HTTPParseError.malformed("bare LF").status  // 400
    /// ```
    package var status: Int {
        switch self {
        case .headTooLarge: 431
        case .malformed: 400
        case .unsupportedVersion: 505
        case .unsupportedTransferCoding: 501
        }
    }

    /// A short human-readable description of the error.
    ///
    /// ```swift
    /// HTTPParseError.unsupportedTransferCoding("gzip, chunked").reason
    /// // "unsupported transfer coding: gzip, chunked"
    /// ```
    package var reason: String {
        switch self {
        case .headTooLarge: "header section too large"
        case .malformed(let why): why
        case .unsupportedVersion: "unsupported HTTP version"
        case .unsupportedTransferCoding(let coding): "unsupported transfer coding: \(coding)"
        }
    }
}
