import LBKit
import Glibc

/// Writes whole lines to standard output with one `write(2)` each: unbuffered (so a supervisor or
/// test reading the pipe sees a line as soon as it is logged) and never interleaved mid-line for
/// lines under PIPE_BUF.
///
/// ```swift
/// StandardOutput.line("Router running on port 8000")
/// ```
public enum StandardOutput {
    /// Writes `text` plus a newline to fd 1.
    public static func line(_ text: String) {
        write(fd: 1, text + "\n")
    }

    /// Writes `text` plus a newline to fd 2.
    public static func errorLine(_ text: String) {
        write(fd: 2, text + "\n")
    }

    private static func write(fd: Int32, _ text: String) {
        var text = text
        text.withUTF8 { buf in
            var offset = 0
            while offset < buf.count {
                let n = Glibc.write(fd, buf.baseAddress.map { $0 + offset }, buf.count - offset)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                offset += n
            }
        }
    }
}
