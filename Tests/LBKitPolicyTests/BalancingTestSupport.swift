import Synchronization
@testable import LBKitPolicy

/// Collects log lines from a cluster (thread-safe).
final class LogCollector: Sendable {
    private let storage = Mutex<[String]>([])

    var lines: [String] { storage.withLock { $0 } }

    var sink: LogSink {
        { [self] event in storage.withLock { $0.append(event.line) } }
    }

    func reset() { storage.withLock { $0.removeAll() } }
}

/// Builds a cluster of `count` backends at http://127.0.0.1:5001... with a manual clock,
/// a seeded generator and a log collector.
func makeCluster(
    count: Int = 3, weights: [Int]? = nil, seed: UInt64 = 1,
    configure: (inout ClusterConfiguration) -> Void = { _ in }
) -> (BackendCluster, ManualClock, LogCollector) {
    var configuration = ClusterConfiguration()
    configure(&configuration)
    let clock = ManualClock()
    let logs = LogCollector()
    let backends = (0..<count).map { BackendDescriptor(url: "http://127.0.0.1:\(5001 + $0)", weight: weights?[$0] ?? 1) }
    let cluster = BackendCluster(
        backends: backends, configuration: configuration, clock: clock, random: SplitMix64(seed: seed), log: logs.sink)
    return (cluster, clock, logs)
}

extension BackendCluster {
    /// Runs one complete attempt on `index`.
    func attempt(_ index: Int, _ outcome: AttemptOutcome, latency: Duration = .milliseconds(10)) {
        attemptStarted(index)
        attemptFinished(index, outcome: outcome, latency: latency)
    }

    /// The chosen backend index, or nil.
    func pick(excluding: BackendIndexSet = BackendIndexSet()) -> Int? {
        if case .backend(let index) = choose(excluding: excluding) { return index }
        return nil
    }

    func state(_ index: Int) -> BackendHealthState? {
        let all = snapshot()
        return all.indices.contains(index) ? all[index].state : nil
    }
}
