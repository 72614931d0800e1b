import Testing
import LBKit

@Suite("Path prefix matching for embedders")
struct PathPrefixTests {
    @Test("the path must be the prefix or below it, a segment at a time; the query is kept")
    func remainder() {
        #expect(LBPathPrefix.remainder(of: "/api", under: "/api") == "/")
        #expect(LBPathPrefix.remainder(of: "/api/", under: "/api") == "/")
        #expect(LBPathPrefix.remainder(of: "/api/x/y?z=1", under: "/api") == "/x/y?z=1")
        #expect(LBPathPrefix.remainder(of: "/api?z=1", under: "/api") == "/?z=1")
        #expect(LBPathPrefix.remainder(of: "/apix", under: "/api") == nil)
        #expect(LBPathPrefix.remainder(of: "/ap", under: "/api") == nil)
        #expect(LBPathPrefix.remainder(of: "/other/api", under: "/api") == nil)
        #expect(LBPathPrefix.remainder(of: "", under: "/api") == nil)
        #expect(LBPathPrefix.remainder(of: "/API/x", under: "/api") == nil)  // paths are case-sensitive
        #expect(LBPathPrefix.remainder(of: "/api/é?q=ü", under: "/api") == "/é?q=ü")
    }
}
