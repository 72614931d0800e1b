/// Path-prefix matching for balancing only part of an app's routes (`/api/*`), shared by the
/// framework integrations and usable by any embedder.
///
/// ```swift
/// LBPathPrefix.remainder(of: "/api/items?page=2", under: "/api")  // "/items?page=2"
/// LBPathPrefix.remainder(of: "/api?page=2", under: "/api")        // "/?page=2"
/// LBPathPrefix.remainder(of: "/api", under: "/api")               // "/"
/// LBPathPrefix.remainder(of: "/apix", under: "/api")              // nil: not under the prefix
/// ```
public enum LBPathPrefix {
    /// The request target with `prefix` removed when its path is `prefix` or below it, nil when
    /// it is not. `prefix` starts with `/` and has no trailing `/` (`/api`); a path segment must
    /// match whole (`/apix` is not under `/api`). The query is kept.
    ///
    /// Per request in the integrations: the prefix is compared as UTF-8 bytes in place (a match
    /// by `Character` walks grapheme clusters), and a `String` is made only for the remainder.
    public static func remainder(of target: String, under prefix: String) -> String? {
        var target = target, prefix = prefix
        let cut: Int = target.withUTF8 { t in
            prefix.withUTF8 { p in
                guard t.count >= p.count else { return -1 }
                return UnsafeBufferPointer(rebasing: t[0..<p.count]).elementsEqual(p) ? p.count : -1
            }
        }
        guard cut >= 0 else { return nil }
        let u = target.utf8
        let rest = u.index(u.startIndex, offsetBy: cut)
        guard rest != u.endIndex else { return "/" }
        switch u[rest] {
        case UInt8(ascii: "/"): return String(target[rest...])
        case UInt8(ascii: "?"): return "/" + target[rest...]
        default: return nil
        }
    }
}
