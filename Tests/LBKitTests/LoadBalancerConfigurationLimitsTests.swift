import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting

/// ``LoadBalancerConfiguration`` values no flag would produce, set directly by an embedder: the
/// balancer must refuse or survive them, never trap.
@Suite("Library configuration limits")
struct LoadBalancerConfigurationLimitsTests {
    @Test("library configurations with nonsense numbers never trap")
    func libraryExtremes() throws {
        var c = LoadBalancerConfiguration()
        c.backends = [try BackendURL(parsing: "http://127.0.0.1:9")]
        c.attemptTimeout = .seconds(Int64.max)
        c.maxAttempts = Int.max
        #expect(c.effectiveRequestTimeout >= .seconds(3600))
        c.maxDelay = .seconds(Int64.max)
        c.healthTimeout = nil
        #expect(c.effectiveHealthTimeout > .zero)
        for rate in [Double.nan, -.infinity, .infinity, -1, 0, 1e300, .leastNonzeroMagnitude] {
            var r = c
            r.rateLimit = rate
            r.burst = nil
            let balancer = try LoadBalancer(configuration: r, group: TestLoops.group)
            balancer.shutdown()
        }
        #expect(LoadBalancerConfiguration.defaultBurst(forRate: .nan) == 1)
        #expect(LoadBalancerConfiguration.defaultBurst(forRate: -.infinity) == 1)
        #expect(LoadBalancerConfiguration.defaultBurst(forRate: .infinity) == 1_000_000)
        #expect(LoadBalancerConfiguration.defaultBurst(forRate: 2.5) == 3)
    }

    @Test("a library configuration with an unsafe health path is refused, not sent")
    func libraryHealthPath() throws {
        var c = LoadBalancerConfiguration()
        c.backends = [try BackendURL(parsing: "http://127.0.0.1:9")]
        c.healthPath = "/a\r\nX: y"
        #expect(throws: LoadBalancerError.self) { try LoadBalancer(configuration: c, group: TestLoops.group) }
        c.healthPath = "/ok"
        #expect(throws: LoadBalancerError.self) {
            try LoadBalancer(configuration: c, group: TestLoops.group, healthPaths: ["/bad path"])
        }
    }
}
