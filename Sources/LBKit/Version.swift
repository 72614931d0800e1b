/// The LBKit release this build is (`lbserve --version` prints `lbserve <string>`).
///
/// ```swift
/// print("lbserve \(LBKitVersion.string)")   // lbserve 2.0.0
/// ```
public enum LBKitVersion {
    /// Semantic version of this release.
    public static let string = "2.0.0"
}
