import Synchronization

/// Whether a shared throttle store is in use right now.
public enum ThrottleStoreState: String, Sendable {
    /// No synchronisation round has completed yet (requests are recorded, to be sent by the first).
    case connecting
    /// The last synchronisation with the store succeeded: limits are shared with the other instances.
    case connected
    /// The store is unreachable, slow or refusing: this instance limits clients with its own table.
    case fallback
}

/// Settings of a ``RedisThrottleStore``.
///
/// ```swift
/// var store = RedisThrottleStoreConfiguration(url: try RedisURL(parsing: "redis://10.0.0.5:6379/0"))
/// store.keyPrefix = "shop-eu:"       // several deployments can share one Redis
/// store.syncInterval = .milliseconds(20)
/// ```
public struct RedisThrottleStoreConfiguration: Sendable, Equatable {
    /// The Redis server (with optional password and database).
    public var url: RedisURL
    /// Prefix of every key written (`<prefix>throttle:<client address>`).
    public var keyPrefix: String
    /// How often this instance sends what it admitted and refused, and learns the shared state.
    public var syncInterval: Duration = .milliseconds(20)
    /// Deadline of one synchronisation command; past it the store counts as unreachable.
    public var commandTimeout: Duration = .milliseconds(250)
    /// TCP connect (plus AUTH/SELECT) deadline.
    public var connectTimeout: Duration = .milliseconds(250)
    /// With no traffic to report, a `PING` this often checks that the store is still there.
    public var heartbeatInterval: Duration = .seconds(1)
    /// Clients per `EVALSHA` (a larger batch is sent as several commands).
    public var maxKeysPerCommand = 512
    /// Most clients waiting to be reported (further new clients are judged locally only until
    /// the next synchronisation).
    public var maxPendingKeys = 100_000

    /// A configuration for `url` with the default prefix `lbkit:`.
    public init(url: RedisURL, keyPrefix: String = "lbkit:") {
        self.url = url
        self.keyPrefix = keyPrefix
    }
}

/// Per-client throttle state shared by several LBKit instances through Redis, kept **off the
/// request path**: each instance decides every request with its own ``ThrottleTable`` at once,
/// and synchronises with Redis in the background.
///
/// Every ``RedisThrottleStoreConfiguration/syncInterval`` the store sends, for each client it saw
/// since the last round, how much it advanced that client's GCRA theoretical arrival time (TAT)
/// and how many requests it refused, in one `EVALSHA` of a Lua script that updates the shared
/// state atomically: `TAT = max(TAT, now) + charged`, the penalty-box strikes, and the penalty
/// end, in one Redis hash per client that expires on its own once it has fully decayed. The
/// script answers with each client's shared TAT and remaining penalty *relative to Redis' clock*
/// (so instances' clocks never need to agree), and the store folds them into the local table
/// (``ThrottleTable/merge(_:ahead:penaltyRemaining:now:)``): the table never becomes more lenient
/// than either the shared or the local state. Docs/Architecture.md ("Shared throttle state")
/// derives the accuracy bound.
///
/// When Redis is unreachable, slow (a command past ``RedisThrottleStoreConfiguration/commandTimeout``)
/// or answers with an error, the store switches to ``ThrottleStoreState/fallback``: requests are
/// still judged by the local table exactly as before (the full configured limit per instance),
/// the switch is logged once (`[THROTTLE]`, warning), and the store probes Redis every
/// interval (the client's reconnect back-off limits the attempts). Once a probe succeeds it
/// logs the return and shares state again. Requests never wait for Redis in any state.
///
/// The balancer builds and runs one when `LoadBalancerConfiguration.throttleStore` is set. Used on its own:
///
/// ```swift
/// func shared(group: LBEventLoopGroup) async throws {
///     let table = ThrottleTable(configuration: ThrottleConfiguration(rate: 10, burst: 20), clock: SystemClock())
///     let store = RedisThrottleStore(
///         configuration: RedisThrottleStoreConfiguration(url: try RedisURL(parsing: "redis://127.0.0.1:6379")),
///         table: table, group: group)
///     let throttle = ThrottleMiddleware(table: table, identity: ClientIdentityResolver(trustedProxies: []), sharedStore: store)
///     let sync = Task { await store.run() }      // until cancelled
///     _ = throttle
///     sync.cancel()
/// }
/// ```
public final class RedisThrottleStore: Sendable {
    /// The settings.
    public let configuration: RedisThrottleStoreConfiguration
    /// The local table this store keeps in step with the shared state.
    public let table: ThrottleTable
    /// The Redis client (one pipelined connection per event loop, made on first use).
    package let client: RedisClient

    private let log: LogSink
    private let metrics: (any MetricsSink)?
    private let script = RedisScript(RedisThrottleStore.luaSource)
    private let scriptArguments: [String]
    private let shards: [PendingShard]
    /// Whether requests are recorded for the next round (not in fallback).
    private let recording = Atomic<Bool>(true)
    private let status: Mutex<Status>
    private let counters = Counters()

    struct Pending {
        var charged: UInt64 = 0
        var throttled: UInt32 = 0
        var penaltyStarted = false
    }

    final class PendingShard: Sendable {
        let map = Mutex<[ClientAddress: Pending]>([:])
    }

    struct Status {
        var state: ThrottleStoreState = .connecting
        var since: MonotonicInstant
        var lastContact: MonotonicInstant?
        var lastError: String?
        var everConnected = false
    }

    final class Counters: Sendable {
        let syncs = Atomic<Int>(0)
        let failures = Atomic<Int>(0)
        let fallbacks = Atomic<Int>(0)
        let keysSynced = Atomic<Int>(0)
        let dropped = Atomic<Int>(0)
        let lastSyncMicros = Atomic<Int>(0)
    }

    private static let shardCount = 16

    /// Creates the store; nothing is sent until ``run()`` (or ``syncOnce()``).
    ///
    /// - Parameters:
    ///   - table: the local table; its configuration (rate, burst, penalty box) is what the
    ///     instances share, so every instance must use the same settings and key prefix.
    ///   - group: event loops for the Redis connections.
    ///   - log: receives the fallback and recovery events (`.throttle`).
    ///   - metrics: receives `lb_throttle_store_up` and the `lb_throttle_store_*_total` counters.
    public init(configuration: RedisThrottleStoreConfiguration, table: ThrottleTable, group: LBEventLoopGroup,
                log: @escaping LogSink = { _ in }, metrics: (any MetricsSink)? = nil) {
        self.configuration = configuration
        self.table = table
        self.log = log
        self.metrics = metrics
        var clientConfiguration = RedisClientConfiguration()
        clientConfiguration.commandTimeout = configuration.commandTimeout
        clientConfiguration.connectTimeout = configuration.connectTimeout
        clientConfiguration.reconnectDelay = .milliseconds(50)
        clientConfiguration.maxReconnectDelay = .seconds(1)
        // One connection is plenty for one command per interval.
        // One connection on the first loop: one command per interval needs no more, and the
        // balancer runs the synchronisation task on that loop.
        client = RedisClient(url: configuration.url, loops: [group.loops[0]], configuration: clientConfiguration)
        let c = table.configuration
        let penalty = c.penaltyEnabled ? c.penaltyDuration.nanosecondsClamped / 1000 : 0
        scriptArguments = [String(c.penaltyThreshold), String(c.penaltyWindow.nanosecondsClamped / 1000), String(penalty)]
        shards = (0..<Self.shardCount).map { _ in PendingShard() }
        status = Mutex(Status(since: table.timeSource.now()))
    }

    // MARK: Request path

    /// Notes what the table decided for `key` (called by ``ThrottleMiddleware`` per request: one
    /// short lock of one of 16 shards; nothing at all while in fallback).
    @inline(__always)
    public func record(_ key: ClientAddress, _ charge: ThrottleCharge) {
        guard recording.load(ordering: .relaxed) else { return }
        let mixed = (key.low ^ key.high) &* 0x9E37_79B9_7F4A_7C15
        let shard = shards[Int(truncatingIfNeeded: mixed >> 60) & (Self.shardCount - 1)]
        let cap = configuration.maxPendingKeys / Self.shardCount + 1
        let kept = shard.map.withLock { map -> Bool in
            if map.count >= cap && map[key] == nil { return false }
            map[key, default: Pending()].add(charge)
            return true
        }
        if !kept { counters.dropped.add(1, ordering: .relaxed) }
    }

    // MARK: Synchronisation

    /// Synchronises every ``RedisThrottleStoreConfiguration/syncInterval`` until the task is
    /// cancelled, then closes the Redis connections.
    nonisolated(nonsending) public func run() async {
        while !Task.isCancelled {
            let start = table.timeSource.now()
            await syncOnce()
            let wait = configuration.syncInterval - (table.timeSource.now() - start)
            do {
                try await Task.sleep(for: max(wait, .milliseconds(1)))
            } catch {
                break
            }
        }
        client.close()
    }

    /// One round: sends the pending charges and merges the shared state back (or, with nothing to
    /// send, checks that the store answers when due). Returns whether the store answered.
    @discardableResult
    nonisolated(nonsending) public func syncOnce() async -> Bool {
        let batch = takePending()
        let started = table.timeSource.now()
        if batch.isEmpty {
            let due = status.withLock { s in
                guard s.state == .connected, let last = s.lastContact else { return true }
                return table.timeSource.now() - last >= configuration.heartbeatInterval
            }
            guard due else { return true }
            do {
                let reply = try await client.send(["PING"])
                guard reply == .simpleString("PONG") else { return failed("unexpected reply to PING: \(reply)") }
            } catch {
                return failed(error.description)
            }
            return succeeded(keys: 0, started: started)
        }
        var index = 0
        while index < batch.count {
            let chunk = batch[index..<min(index + configuration.maxKeysPerCommand, batch.count)]
            index += chunk.count
            var keys: [String] = []
            keys.reserveCapacity(chunk.count)
            var arguments = scriptArguments
            arguments.reserveCapacity(scriptArguments.count + 3 * chunk.count)
            for (key, pending) in chunk {
                keys.append(configuration.keyPrefix + "throttle:" + key.description)
                arguments.append(String(pending.charged))
                arguments.append(String(pending.throttled))
                arguments.append(pending.penaltyStarted ? "1" : "0")
            }
            let reply: RESPValue
            do {
                reply = try await client.evalScript(script, keys: keys, arguments: arguments)
            } catch {
                return failed(error.description)
            }
            guard let items = reply.elements, items.count == 2 * chunk.count else {
                return failed("unexpected reply to the throttle script: \(String(describing: reply).prefix(200))")
            }
            let now = table.timeSource.now()
            for (i, (key, _)) in chunk.enumerated() {
                let ahead = items[2 * i].int64 ?? 0
                let penalty = items[2 * i + 1].int64 ?? 0
                table.merge(key, ahead: .microseconds(ahead), penaltyRemaining: .microseconds(penalty), now: now)
            }
        }
        return succeeded(keys: batch.count, started: started)
    }

    /// The store's state now.
    public var state: ThrottleStoreState { status.withLock { $0.state } }

    /// Rounds that reached Redis (syncs and heartbeats), rounds that failed, and switches to fallback.
    public var syncCount: Int { counters.syncs.load(ordering: .relaxed) }
    /// Rounds that failed (Redis unreachable, slow or refusing).
    public var failureCount: Int { counters.failures.load(ordering: .relaxed) }
    /// Switches to fallback (from connected, or from connecting when the first round failed).
    public var fallbackCount: Int { counters.fallbacks.load(ordering: .relaxed) }

    private func takePending() -> [(ClientAddress, Pending)] {
        var batch: [(ClientAddress, Pending)] = []
        for shard in shards {
            let map = shard.map.withLock { m -> [ClientAddress: Pending] in
                let taken = m
                m = [:]
                return taken
            }
            for entry in map { batch.append(entry) }
        }
        return batch
    }

    private func clearPending() {
        for shard in shards { shard.map.withLock { $0 = [:] } }
    }

    private func succeeded(keys: Int, started: MonotonicInstant) -> Bool {
        let now = table.timeSource.now()
        counters.syncs.add(1, ordering: .relaxed)
        counters.keysSynced.add(keys, ordering: .relaxed)
        counters.lastSyncMicros.store(Int((now - started).nanosecondsClamped / 1000), ordering: .relaxed)
        let (recovered, first) = status.withLock { s -> (Bool, Bool) in
            let recovered = s.state == .fallback && s.everConnected
            let first = !s.everConnected
            if s.state != .connected { s.since = now }
            s.state = .connected
            s.lastContact = now
            s.everConnected = true
            return (recovered, first)
        }
        recording.store(true, ordering: .relaxed)
        if recovered {
            log(LBLogEvent(level: .notice, category: .throttle,
                           message: "shared throttle store \(configuration.url) is back: clients are limited together with the other instances again",
                           metadata: ["store": configuration.url.description, "state": "connected"]))
        } else if first {
            log(LBLogEvent(level: .info, category: .throttle,
                           message: "shared throttle store \(configuration.url) connected (key prefix '\(configuration.keyPrefix)')",
                           metadata: ["store": configuration.url.description, "state": "connected"]))
        }
        if recovered || first { metrics?.record(gauge: "lb_throttle_store_up", value: 1, dimensions: []) }
        return true
    }

    private func failed(_ reason: String) -> Bool {
        counters.failures.add(1, ordering: .relaxed)
        let now = table.timeSource.now()
        let switched = status.withLock { s -> Bool in
            s.lastError = reason
            guard s.state != .fallback else { return false }
            s.state = .fallback
            s.since = now
            return true
        }
        guard switched else { return false }
        recording.store(false, ordering: .relaxed)
        clearPending()
        counters.fallbacks.add(1, ordering: .relaxed)
        log(LBLogEvent(level: .warning, category: .throttle,
                       message: "shared throttle store \(configuration.url) unavailable (\(reason)): each instance limits clients with its own table until it is back",
                       metadata: ["store": configuration.url.description, "state": "fallback", "reason": reason]))
        metrics?.record(gauge: "lb_throttle_store_up", value: 0, dimensions: [])
        metrics?.increment(counter: "lb_throttle_store_fallbacks_total", by: 1, dimensions: [])
        return false
    }

    // MARK: Observability

    /// The `"throttle_store"` object of `/_lb/stats`.
    public func statsJSON() -> String {
        let s = status.withLock { $0 }
        let forMs = (table.timeSource.now() - s.since).milliseconds
        let c = counters
        return """
            {"kind":"redis","state":"\(s.state.rawValue)","url":\(JSON.quote(configuration.url.description)),\
            "key_prefix":\(JSON.quote(configuration.keyPrefix)),"sync_interval_ms":\(String(format3: configuration.syncInterval.milliseconds)),\
            "state_for_ms":\(String(format3: forMs)),"syncs":\(c.syncs.load(ordering: .relaxed)),\
            "sync_failures":\(c.failures.load(ordering: .relaxed)),"fallbacks":\(c.fallbacks.load(ordering: .relaxed)),\
            "keys_synced":\(c.keysSynced.load(ordering: .relaxed)),"pending_dropped":\(c.dropped.load(ordering: .relaxed)),\
            "last_sync_ms":\(String(format3: Double(c.lastSyncMicros.load(ordering: .relaxed)) / 1000)),\
            "last_error":\(s.lastError.map(JSON.quote) ?? "null")}
            """
    }

    /// The `lb_throttle_store_*` families of `/_lb/metrics`.
    public func prometheusText() -> String {
        let c = counters
        var out = ""
        func family(_ name: String, _ type: String, _ help: String, _ value: Int) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(value)\n"
        }
        family("lb_throttle_store_up", "gauge", "1 while throttle state is shared through the store, 0 in local fallback.", state == .connected ? 1 : 0)
        family("lb_throttle_store_syncs_total", "counter", "Synchronisation rounds the store answered.", c.syncs.load(ordering: .relaxed))
        family("lb_throttle_store_sync_failures_total", "counter", "Synchronisation rounds that failed (unreachable, slow or refused).", c.failures.load(ordering: .relaxed))
        family("lb_throttle_store_fallbacks_total", "counter", "Switches to local-only throttling.", c.fallbacks.load(ordering: .relaxed))
        family("lb_throttle_store_keys_synced_total", "counter", "Client states sent to and merged from the store.", c.keysSynced.load(ordering: .relaxed))
        return out
    }

    // MARK: The script

    /// One call handles a batch of clients. KEYS[i]: the client's hash (fields `t` TAT, `s`
    /// strikes, `w` strike window start, `p` penalty end; microseconds on Redis' clock).
    /// ARGV[1..3]: penalty threshold, penalty window (us), penalty duration (us, 0 = no penalty
    /// box); then per client: charged (ns), refused requests, 1 if this instance started a
    /// penalty. Returns per client: TAT - now and penalty end - now (us, at least 0).
    static let luaSource = """
        local time = redis.call('TIME')
        local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
        local threshold = tonumber(ARGV[1])
        local window = tonumber(ARGV[2])
        local duration = tonumber(ARGV[3])
        local out = {}
        for i = 1, #KEYS do
          local key = KEYS[i]
          local base = 3 + (i - 1) * 3
          local cost = tonumber(ARGV[base + 1]) / 1000
          local refused = tonumber(ARGV[base + 2])
          local started = ARGV[base + 3] == '1'
          local h = redis.call('HMGET', key, 't', 's', 'w', 'p')
          local tat = tonumber(h[1]) or 0
          local strikes = tonumber(h[2]) or 0
          local wstart = tonumber(h[3]) or 0
          local pend = tonumber(h[4]) or 0
          if cost > 0 then
            tat = math.max(tat, now) + cost
          end
          if duration > 0 then
            if refused > 0 and pend <= now then
              if strikes == 0 or now > wstart + window then
                wstart = now
                strikes = refused
              else
                strikes = strikes + refused
              end
              if strikes > threshold then
                pend = now + duration
                strikes = 0
              end
            end
            if started and pend < now + duration then
              pend = now + duration
              strikes = 0
            end
          end
          local live = math.max(tat, pend)
          if strikes > 0 then live = math.max(live, wstart + window) end
          if live > now then
            redis.call('HSET', key, 't', string.format('%.0f', tat), 's', string.format('%.0f', strikes),
                       'w', string.format('%.0f', wstart), 'p', string.format('%.0f', pend))
            redis.call('PEXPIRE', key, math.ceil((live - now) / 1000) + 1)
          else
            redis.call('DEL', key)
          end
          out[#out + 1] = math.floor(math.max(tat - now, 0))
          out[#out + 1] = math.floor(math.max(pend - now, 0))
        end
        return out
        """
}

extension RedisThrottleStore.Pending {
    mutating func add(_ charge: ThrottleCharge) {
        charged &+= charge.charged
        if !charge.decision.isAllowed { throttled &+= 1 }
        if charge.penaltyStarted { penaltyStarted = true }
    }
}

extension LoadBalancer {
    /// The shared store `configuration` asks for (nil without `throttleStore`).
    static func throttleStore(_ configuration: LoadBalancerConfiguration, table: ThrottleTable, group: LBEventLoopGroup,
                              log: @escaping LogSink, metrics: (any MetricsSink)?) -> RedisThrottleStore? {
        guard let url = configuration.throttleStore else { return nil }
        var store = RedisThrottleStoreConfiguration(url: url, keyPrefix: configuration.throttleKeyPrefix)
        store.syncInterval = configuration.throttleSyncInterval
        store.commandTimeout = configuration.throttleStoreTimeout
        store.connectTimeout = configuration.throttleStoreTimeout
        return RedisThrottleStore(configuration: store, table: table, group: group, log: log, metrics: metrics)
    }
}
