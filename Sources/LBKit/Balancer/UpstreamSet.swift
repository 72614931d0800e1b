import Synchronization

/// The backends in effect at one moment: their URLs, connection pools, health-check paths and the
/// ``BackendCluster`` holding their health and latency state. Immutable; a configuration reload,
/// a name resolution that changed addresses or an admin change builds a new set and swaps it in,
/// and each request keeps the set it started with, so a removed backend drains naturally (no new
/// requests, in-flight ones finish).
final class UpstreamSet: Sendable {
    /// The members (one per address), parallel to every array below and to the cluster.
    let members: [BackendMember]
    let urls: [BackendURL]
    let names: [String]
    let endpoints: [UpstreamEndpoint]
    let healthPaths: [String]
    /// Which answers pass each backend's health check (an explicit path is judged strictly).
    let healthExpectations: [HealthCheckExpectation]
    let cluster: BackendCluster
    /// Attempts in flight per backend, over every set the backend has been in (carried over
    /// like the endpoints): a retiring backend leaves when its counter reaches zero.
    let activity: [AttemptCounter]
    /// Whether the backend is retiring (vanished address or removed declaration).
    let retiring: [Bool]
    /// How many backends are retiring.
    let retiringCount: Int

    private init(members: [BackendMember], urls: [BackendURL], endpoints: [UpstreamEndpoint], healthPaths: [String],
                 healthExpectations: [HealthCheckExpectation], cluster: BackendCluster, activity: [AttemptCounter]) {
        self.members = members
        self.urls = urls
        names = urls.map(\.description)
        self.endpoints = endpoints
        self.healthPaths = healthPaths
        self.healthExpectations = healthExpectations
        self.cluster = cluster
        self.activity = activity
        retiring = members.map(\.retiring)
        retiringCount = retiring.filter { $0 }.count
    }

    /// Attempts in flight on the backend whose URL is `url` (0 when it is not in the set).
    func inFlight(_ url: String) -> Int {
        guard let i = names.firstIndex(of: url) else { return 0 }
        return activity[i].total
    }

    /// Builds a set from `members` (each URL an IP literal). Endpoints (and so their pooled
    /// connections), attempt counters and cluster state of backends that also exist in
    /// `previous` are carried over; backends new to a running balancer start in slow start.
    static func make(members: [BackendMember], defaultHealthPath: String,
                     defaultPathIsExplicit: Bool = true, expectedStatuses: HTTPStatusSet? = nil,
                     previous: UpstreamSet?, group: LBEventLoopGroup, clusterConfiguration: ClusterConfiguration,
                     clock: any MonotonicClock, log: @escaping LogSink) throws(LoadBalancerError) -> UpstreamSet {
        guard members.count <= BackendIndexSet.capacity else {
            throw LoadBalancerError("at most \(BackendIndexSet.capacity) backends are supported, got \(members.count)")
        }
        let paths = members.map { $0.healthPath ?? defaultHealthPath }
        for (i, path) in paths.enumerated() {
            // The path goes onto a request line: refuse anything that could break or extend it.
            if let problem = HTTP1Syntax.originFormProblem(path) {
                throw LoadBalancerError("backend \(members[i].origin): health path \(path.debugDescription) \(problem)")
            }
        }
        var urls: [BackendURL] = []
        var endpoints: [UpstreamEndpoint] = []
        var activity: [AttemptCounter] = []
        for member in members {
            let url: BackendURL
            let origin: BackendURL
            do throws(BackendURLError) {
                url = try BackendURL(parsing: member.url)
                origin = try BackendURL(parsing: member.origin)
            } catch {
                throw LoadBalancerError("backend \(member.url): \(error)")
            }
            urls.append(url)
            // The Host of health checks is the declared name (virtual hosting), not the address.
            let authority = origin.authority
            if let previous, let i = previous.urls.firstIndex(of: url), previous.endpoints[i].authority == authority {
                endpoints.append(previous.endpoints[i])
                activity.append(previous.activity[i])
                continue
            }
            guard let address = IPSocketAddress(ipLiteral: url.host, port: url.port) else {
                throw LoadBalancerError("backend \(url): not an IP address (names are resolved before a set is built)")
            }
            endpoints.append(UpstreamEndpoint(address: address, authority: authority, group: group))
            activity.append(previous.flatMap { p in p.urls.firstIndex(of: url).map { p.activity[$0] } } ?? AttemptCounter(loopCount: group.loops.count))
        }
        let descriptors = members.map { BackendDescriptor(url: $0.url, weight: max(1, $0.weight)) }
        let cluster = BackendCluster(backends: descriptors, configuration: clusterConfiguration, clock: clock, log: log)
        if let previous {
            cluster.inheritState(from: previous.cluster)
            for (i, member) in members.enumerated() {
                if member.retiring {
                    cluster.setDrainFlag(i, true)
                } else if let j = previous.names.firstIndex(of: member.url), previous.retiring[j] {
                    cluster.setDrainFlag(i, false)  // its address resolves again
                }
            }
        }
        let expectations = members.map { m in
            HealthCheckExpectation(pathIsExplicit: m.healthPath != nil || defaultPathIsExplicit, expectedStatuses: expectedStatuses)
        }
        return UpstreamSet(members: members, urls: urls, endpoints: endpoints, healthPaths: paths,
                           healthExpectations: expectations, cluster: cluster, activity: activity)
    }
}

/// Attempts in flight on one backend, shared by every ``UpstreamSet`` the backend is in.
///
/// Counted per event loop, each loop's count on cache lines of its own, and summed when read:
/// every attempt adds and subtracts, and one atomic written by both loops of a two-loop
/// balancer moved its cache line between the cores twice per request. A loop's count may go
/// below zero (an attempt that ended on another loop than it started on); the sum is exact.
final class AttemptCounter: Sendable {
    /// One per loop, then one for callers on no loop of the balancer's group (``LoopSlots``).
    private let slots: [PaddedCount]

    init(loopCount: Int) {
        slots = (0..<LoopSlots.count(forLoops: loopCount)).map { _ in PaddedCount() }
    }

    @inline(__always)
    private func slot(_ loopIndex: Int?) -> Int { LoopSlots.index(of: loopIndex, among: slots.count) }

    /// An attempt started on loop `loopIndex` (`group.currentLoopIndex`).
    @inline(__always)
    func started(onLoop loopIndex: Int?) {
        slots[slot(loopIndex)].value.add(1, ordering: .relaxed)
    }

    /// An attempt ended on loop `loopIndex`. Sequentially consistent, as ``total`` is: of two
    /// attempts ending at once on two loops, the later one's ``total`` sees both ends, so a
    /// retiring backend's last attempt is always noticed.
    @inline(__always)
    func ended(onLoop loopIndex: Int?) {
        slots[slot(loopIndex)].value.subtract(1, ordering: .sequentiallyConsistent)
    }

    /// Attempts in flight now.
    var total: Int { slots.reduce(0) { $0 + $1.value.load(ordering: .sequentiallyConsistent) } }

    private final class PaddedCount: Sendable {
        private let leadingPad = CacheLinePadding()
        let value = Atomic<Int>(0)
        private let trailingPad = CacheLinePadding()
    }
}

/// The ``UpstreamSet`` in effect, read by every request without writing a shared cache line.
///
/// A `Mutex` read takes the lock, a write to the lock's cache line: with two loops that line
/// moved between the cores on every request (`Docs/Performance.md` step 50). Each loop of the
/// balancer's group keeps its own copy of the set here, checked against a generation number that
/// only a swap writes; a request on a loop thread reads the number (a shared read, no write) and
/// its loop's copy. Callers on no loop of the group read under the lock.
///
/// ```swift
/// let up = balancer.upstreamSet.read(onLoop: group.currentLoopIndex)
/// ```
final class PublishedUpstreamSet: Sendable {
    private let current: Mutex<UpstreamSet>
    /// Incremented by every ``publish(_:)``, inside the lock, after the swap.
    private let generation = Atomic<Int>(0)
    private let copies: [LoopCopy]

    init(_ initial: UpstreamSet, loopCount: Int) {
        current = Mutex(initial)
        copies = (0..<max(loopCount, 0)).map { _ in LoopCopy() }
    }

    /// The set in effect (under the lock).
    var value: UpstreamSet { current.withLock { $0 } }

    /// Swaps in `next`: requests that start after this call use it.
    func publish(_ next: UpstreamSet) {
        current.withLock { set in
            set = next
            generation.add(1, ordering: .releasing)
        }
    }

    /// The set in effect, from loop `index`'s copy when it is current.
    /// - Parameter index: the index of the loop whose thread calls this (`group.currentLoopIndex`),
    ///   nil elsewhere. Only that loop's thread may pass it: the copy is not locked.
    @inline(__always)
    func read(onLoop index: Int?) -> UpstreamSet {
        guard let index, index < copies.count else { return value }
        let seen = generation.load(ordering: .acquiring)
        if copies[index].generation == seen, let set = copies[index].set { return set }
        let (set, latest) = current.withLock { ($0, generation.load(ordering: .relaxed)) }
        copies[index].set = set
        copies[index].generation = latest
        return set
    }

    /// One loop's copy, padded onto cache lines of its own.
    ///
    /// `@unchecked Sendable`, proof: only ``read(onLoop:)`` touches `generation` and `set`, and
    /// only with `LBEventLoopGroup.currentLoopIndex`, which is that loop's index on that loop's
    /// own thread and nil on every other thread; a loop's thread runs one job at a time, so each
    /// copy is only ever accessed by one thread, sequentially.
    private final class LoopCopy: @unchecked Sendable {
        private let leadingPad = CacheLinePadding()
        var generation = -1
        var set: UpstreamSet?
        private let trailingPad = CacheLinePadding()
    }
}
