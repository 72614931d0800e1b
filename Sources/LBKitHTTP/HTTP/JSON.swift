/// Minimal JSON helpers for the balancer's own small bodies (errors, stats); no Foundation on the hot path.
package enum JSON {
    /// `text` as a quoted JSON string with the required escapes.
    package static func quote(_ text: String) -> String {
        var out = "\""
        out.reserveCapacity(text.utf8.count + 2)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
        return out
    }
}

extension String {
    /// `value` with three decimals, e.g. `1.250` (no Foundation).
    package init(format3 value: Double) {
        let scaled = Int((value * 1000).rounded())
        let whole = scaled / 1000, frac = abs(scaled % 1000)
        let f = String(frac)
        self = "\(whole).\(String(repeating: "0", count: 3 - f.count))\(f)"
    }
}
