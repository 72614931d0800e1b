/// Everything a ``LoadBalancer`` needs: where to listen, the backends, and the policies for
/// failures, slowness and throttling. Each property is one `lbserve` flag (see README).
///
/// ```swift
/// var config = LoadBalancerConfiguration()
/// config.backends = [try BackendURL(parsing: "http://127.0.0.1:5001"),
///                    try BackendURL(parsing: "http://127.0.0.1:5002")]
/// config.attemptTimeout = .milliseconds(500)
/// ```
public struct LoadBalancerConfiguration: Sendable, Equatable {
    /// Listen address (`--host`).
    public var host = "0.0.0.0"
    /// Listen port (`--port`); 0 picks a free port.
    public var port = 8000
    /// Backends in rotation order (`--backend`). A URL whose host is a name (not an IP literal)
    /// becomes one backend per address it resolves to (see ``resolveInterval``).
    public var backends: [BackendURL] = []
    /// How often backend host names are resolved again (`--resolve-interval-ms`, default 5 s,
    /// Envoy's DNS refresh rate): new addresses join in slow start, vanished ones drain and
    /// leave, and a failed resolution keeps the last known addresses. `.zero` = resolve once,
    /// when the backend is configured (then a name that does not resolve is a configuration
    /// error, as it was before names were re-resolved).
    public var resolveInterval: Duration = .seconds(5)
    /// Per-backend weights for the weighted strategy (same order as `backends`; missing = 1).
    public var weights: [Int] = []
    /// Selection strategy (`--strategy`).
    public var strategy: BalancingStrategy = .roundRobin
    /// Deadline of one attempt (`--timeout-ms`).
    public var attemptTimeout: Duration = .milliseconds(3000)
    /// Deadline shared by all attempts of a request (`--request-timeout-ms`); nil = attempt timeout x max attempts.
    public var requestTimeout: Duration?
    /// TCP connect timeout per attempt (`--connect-timeout-ms`).
    public var connectTimeout: Duration = .milliseconds(1000)
    /// Latency above which a backend is excluded as slow (`--max-delay-ms`); nil = no latency ejection.
    public var maxDelay: Duration?
    /// When to hedge a replayable request (`--hedge-after-ms`): if its attempt has not started
    /// answering after this long, a second attempt goes to another backend and the first good
    /// answer wins. nil = automatic: on when `maxDelay` is set, after min(max-delay, max(2 ms,
    /// 2 x the backend's recent p99)); without `maxDelay`, at the backend's hung threshold
    /// (max(50 ms, 10 x its latency EWMA), see ``HangDetection``); `.zero` = never.
    public var hedgeAfter: Duration?
    /// When a backend that holds requests without answering counts as hung and is ejected
    /// (on by default; `HangDetection(factor: 0)` turns it off). With `maxDelay` set, the floor
    /// is raised to twice `maxDelay`, so latency ejection judges mere slowness.
    public var hangDetection = HangDetection()
    /// Consecutive failures that eject a backend (`--max-fails`).
    public var maxFails = 3
    /// Active health check period (`--health-interval-ms`); zero disables active checks.
    public var healthInterval: Duration = .milliseconds(2000)
    /// Active health check path (`--health-path`). Setting it (to any value, `/health`
    /// included) makes it explicit: see ``healthPathIsExplicit``.
    public var healthPath = "/health" {
        didSet { healthPathIsExplicit = true }
    }
    /// Whether ``healthPath`` was configured rather than left at its default. With the default
    /// path, a probe answered 404, 405 or 501 means "the application has no health endpoint":
    /// the backend is reachable and the check passes (logged once per backend). With an explicit
    /// path, 2xx and 3xx pass and anything else fails. Set automatically when `healthPath` is
    /// assigned; per-backend health paths are always explicit.
    public var healthPathIsExplicit = false
    /// The statuses an active health check accepts (`--health-expect-status 200-399`); nil =
    /// automatic (see ``healthPathIsExplicit``).
    public var healthExpectStatus: HTTPStatusSet?
    /// Active health check timeout (`--health-timeout-ms`); nil = min(interval, 2 s), at least max-delay x 2.
    public var healthTimeout: Duration?
    /// Consecutive failed health checks that mark a backend down (`--health-fall`).
    public var healthFall = 3
    /// Consecutive passing health checks that bring a backend back (`--health-rise`).
    public var healthRise = 2
    /// After a re-admission the backend's share ramps from 10% to 100% over this time
    /// (`--slow-start-ms`; `.zero` = at once).
    public var slowStart: Duration = .seconds(10)
    /// First passive ejection; the n-th in a row lasts n times as long (`--ejection-base-ms`).
    public var ejectionBase: Duration = .seconds(5)
    /// Longest passive ejection (`--ejection-max-ms`); at least ``ejectionBase``.
    public var ejectionMax: Duration = .seconds(60)
    /// At most this percentage of the backends (at least one) is passively excluded at once
    /// (`--max-ejected-percent`); backends marked down by health checks are not capped.
    public var maxEjectedPercent = 50
    /// Largest CPU fraction a backend may report in its health answers (`--max-backend-cpu`,
    /// e.g. 0.9) before it leaves the rotation; it comes back after `healthRise` reports at or
    /// below 90% of it. nil = reported CPU is shown in stats but excludes nothing. Needs active
    /// health checks (the reports ride on them). See ``BackendLoadReport``.
    public var maxBackendCPU: Double?
    /// Largest memory fraction a backend may report (`--max-backend-memory`); as ``maxBackendCPU``.
    public var maxBackendMemory: Double?
    /// Requests per second per client IP (`--rate-limit`); nil = no throttling.
    public var rateLimit: Double?
    /// Burst per client IP (`--burst`); nil = same as the rate (at least 1).
    public var burst: Int?
    /// Largest request body (`--max-body-bytes`).
    public var maxBodyBytes = 8 * 1024 * 1024
    /// Distinct backends tried per request (`--max-attempts`).
    public var maxAttempts = 3
    /// Also fail over POST/PATCH after they were sent (`--retry-non-idempotent`).
    public var retryNonIdempotent = false
    /// Most clients tracked by the throttle table (`--throttle-max-keys`).
    public var throttleMaxKeys = 100_000
    /// Throttled responses within `penaltyWindow` that put a client in the penalty box (`--penalty-threshold`; 0 = no penalty box).
    public var penaltyThreshold = 10
    /// Window for counting a client's throttled responses (`--penalty-window-ms`).
    public var penaltyWindow: Duration = .seconds(10)
    /// How long a penalised client stays penalised (`--penalty-duration-ms`).
    public var penaltyDuration: Duration = .seconds(60)
    /// Rate and burst are divided by this while penalised (`--penalty-factor`).
    public var penaltyFactor = 4
    /// Peers whose X-Forwarded-For is believed (`--trusted-proxy`).
    public var trustedProxies: [CIDRRange] = []
    /// Token that authorises `/_lb/backends/drain|undrain` from non-loopback peers via the
    /// `X-Admin-Token` header (`--admin-token`); nil = loopback peers only.
    public var adminToken: String?
    /// Clients (resolved as for throttling: behind a trusted proxy, the forwarded client) to
    /// which the `/_lb/*` admin endpoints answer (`--admin-allow CIDR`, repeatable); empty =
    /// loopback clients only. Other clients' requests to `/_lb/*` are proxied like any other path.
    public var adminAllow: [CIDRRange] = []
    /// The response header naming the backend that answered (`--backend-header`); nil = none
    /// (then error bodies do not name backends either).
    public var backendHeader: String? = "X-Backend"
    /// A path the balancer answers itself, for everyone (`--router-health-path /health`):
    /// `GET` gives 200 `{"status":"router ok","backends":N,"eligible":M}`, or 503 when no
    /// backend is eligible. nil = none.
    public var routerHealthPath: String?
    /// One line per request on stdout (`--access-log`).
    public var accessLog = false
    /// Event loops (`--threads`); default one per core.
    public var loopCount = LBEventLoopGroup.coreCount
    /// Whether a task that LBKit's event loop resumes (the backend answered) goes on running on
    /// that loop's thread until it next waits, instead of on a thread of the global pool (default
    /// true). The balancer then calls ``LBEventLoopGroup/keepGlobalJobsOnLoopThreads()``, which
    /// holds for the whole process.
    ///
    /// In lbserve this spares the runtime a locked look-up at every `await` of a connection
    /// (Docs/Performance.md, step 25). Embedded in Hummingbird or Vapor, the route's work after
    /// the backend answered (turning the response into the framework's, your middlewares'
    /// code after the balancer, starting the write) runs on the loop that read the answer,
    /// without a hand-over to the pool: about a seventh less CPU per balanced request
    /// (Docs/Embedding.md). Set it to false when code that runs after the balancer in the same
    /// task, or a task it starts, blocks its thread (synchronous file or network I/O): on the
    /// loop it would hold up other requests' upstream traffic.
    ///
    /// ```swift
    /// var config = LoadBalancerConfiguration()
    /// config.keepsResumedTasksOnLoops = false   // a blocking audit logger runs after the balancer
    /// ```
    public var keepsResumedTasksOnLoops = true
    /// Shared per-client throttle state in Redis (`--throttle-store redis://[:password@]host:port[/db]`);
    /// nil = each instance limits clients on its own. Needs `rateLimit`; the store synchronises
    /// while ``LoadBalancer/run()`` runs (see ``RedisThrottleStore``).
    public var throttleStore: RedisURL?
    /// Prefix of the throttle store's Redis keys (`--throttle-key-prefix`).
    public var throttleKeyPrefix = "lbkit:"
    /// How often the throttle table is synchronised with the store (`--throttle-sync-ms`).
    public var throttleSyncInterval: Duration = .milliseconds(20)
    /// Deadline of one synchronisation with the store (`--throttle-store-timeout-ms`); past it the
    /// instance falls back to its local table until the store answers again.
    public var throttleStoreTimeout: Duration = .milliseconds(250)

    /// Defaults as documented per property.
    public init() {}

    /// The accepted per-backend weights (config file `weight`, admin API `weight`).
    public static let weightRange = 1...1000

    /// The overall request deadline in effect. Computed without overflow whatever the values
    /// (each factor is capped first: a year per attempt, 1000 attempts).
    public var effectiveRequestTimeout: Duration {
        requestTimeout ?? Self.capped(attemptTimeout) * min(max(maxAttempts, 0), 1000)
    }

    /// The health check timeout in effect.
    public var effectiveHealthTimeout: Duration {
        if let healthTimeout { return healthTimeout }
        var t = min(healthInterval, .seconds(2))
        if let maxDelay { t = max(t, Self.capped(maxDelay) * 2) }
        return max(t, .milliseconds(100))
    }

    /// The burst used when `burst` is nil: the rate rounded up, at least 1, at most the
    /// throttle's largest burst; any rate (NaN, infinite, negative) gives a valid count.
    public static func defaultBurst(forRate rate: Double) -> Int {
        guard rate > 1 else { return 1 }  // also NaN and negative rates
        return Int(min(rate, 1_000_000).rounded(.up))
    }

    /// Durations longer than this are treated as this in derived timeouts (a year: effectively
    /// "never", and far from `Duration`'s overflow when multiplied).
    static let longestTimeout: Duration = .seconds(365 * 86_400)

    private static func capped(_ d: Duration) -> Duration { min(max(d, .zero), longestTimeout) }
}
