import Dispatch
import Logging
import Synchronization
import Vapor

/// Lets a Vapor application own a ``LoadBalancer``: starts `balancer.run()` (health checks) when
/// the application has booted, and at shutdown stops taking new requests, waits for the ones in
/// flight, calls `balancer.shutdown()` and waits for `run()` to return (which closes upstream
/// connections and stops the balancer's own event loops). No glue code in the application.
///
/// Usually created for you by ``Vapor/Application/LoadBalancers/use(_:pathPrefix:stripPrefix:exposesBackendHeader:middlewares:drainTimeout:)``;
/// registering one by hand:
///
/// ```swift
/// func configure(_ app: Application, balancer: LoadBalancer) {
///     let lifecycle = LoadBalancerLifecycle(balancer: balancer)
///     app.lifecycle.use(lifecycle)
///     app.middleware.use(LoadBalancerMiddleware(lifecycle: lifecycle, pathPrefix: "/api"))
/// }
/// ```
///
/// Both the async (`Application.make` + `execute()` / `asyncShutdown()`) and the legacy
/// synchronous (`boot()` / `shutdown()`) paths of Vapor are handled. Shutdown is bounded: at most
/// ``drainTimeout`` for requests already inside the balancer, plus the balancer's own drain.
/// Requests that reach a ``LoadBalancerMiddleware`` bound to this lifecycle after shutdown began
/// get `503 {"error":"load balancer is shutting down","status":503}`.
///
/// If the application shuts down without ever booting, shutdown still runs the balancer's
/// stop sequence, so its event loops never outlive the application.
public final class LoadBalancerLifecycle: LifecycleHandler, Sendable {
    /// Where the lifecycle stands.
    ///
    /// ```swift
    /// func isServing(_ lifecycle: LoadBalancerLifecycle) -> Bool {
    ///     lifecycle.state == .running
    /// }
    /// ```
    public enum State: Sendable, Equatable, CustomStringConvertible {
        /// Registered; the application has not booted yet (requests are still forwarded).
        case idle
        /// `balancer.run()` is running.
        case running
        /// Shutdown began: new requests get 503, requests in flight finish.
        case stopping
        /// `balancer.run()` has returned; the balancer's event loops are stopped.
        case stopped

        /// `idle`, `running`, `stopping` or `stopped`, e.g. for a status page:
        ///
        /// ```swift
        /// app.get("lb-state") { _ in lifecycle.state.description }
        /// ```
        public var description: String {
            switch self {
            case .idle: "idle"
            case .running: "running"
            case .stopping: "stopping"
            case .stopped: "stopped"
            }
        }
    }

    /// The balancer this lifecycle owns.
    ///
    /// ```swift
    /// let stats = lifecycle.balancer.statsJSON()
    /// ```
    public let balancer: LoadBalancer
    /// How long shutdown waits for requests already inside the balancer before it stops it.
    ///
    /// ```swift
    /// app.logger.info("balancer drains for at most \(lifecycle.drainTimeout)")
    /// ```
    public let drainTimeout: Duration
    let gate = RequestGate()
    private let logger: Logger
    private let machine = Mutex(Machine())

    private struct Machine: Sendable {
        var state: State = .idle
        var runTask: Task<Void, Never>?
        var stopTask: Task<Void, Never>?
    }

    /// Creates the lifecycle for `balancer`.
    ///
    /// - Parameters:
    ///   - balancer: the balancer to run; its `run()` must not be called elsewhere.
    ///   - drainTimeout: how long shutdown waits for requests in flight; nil = the balancer's
    ///     request deadline (`configuration.effectiveRequestTimeout`) plus one second, which every
    ///     request forwarded by the balancer respects.
    ///   - logger: where an unexpected error from `run()` or a slow drain is reported.
    ///
    /// ```swift
    /// let lifecycle = LoadBalancerLifecycle(balancer: balancer, drainTimeout: .seconds(5))
    /// ```
    public init(balancer: LoadBalancer, drainTimeout: Duration? = nil,
                logger: Logger = Logger(label: "lbkit.vapor")) {
        self.balancer = balancer
        self.drainTimeout = drainTimeout ?? balancer.configuration.effectiveRequestTimeout + .seconds(1)
        self.logger = logger
    }

    /// The current state.
    ///
    /// ```swift
    /// let ready = lifecycle.state == .running
    /// ```
    public var state: State { machine.withLock { $0.state } }

    /// Requests currently inside the balancer through middleware bound to this lifecycle.
    ///
    /// ```swift
    /// app.logger.info("\(lifecycle.requestsInFlight) requests being balanced")
    /// ```
    public var requestsInFlight: Int { gate.inFlight }

    // MARK: LifecycleHandler

    /// Starts `balancer.run()` in a task (async boot path). Vapor calls it; you do not:
    ///
    /// ```swift
    /// app.lifecycle.use(LoadBalancerLifecycle(balancer: balancer))
    /// try await app.execute()      // boots: didBootAsync starts the balancer
    /// ```
    public func didBootAsync(_ application: Application) async throws {
        start()
    }

    /// Starts `balancer.run()` in a task (synchronous boot path, also used by VaporTesting's
    /// `app.testing()`):
    ///
    /// ```swift
    /// let tester = try app.testing()   // boots: didBoot starts the balancer
    /// ```
    public func didBoot(_ application: Application) throws {
        start()
    }

    /// Stops the balancer gracefully and waits until `run()` has returned (async shutdown path):
    ///
    /// ```swift
    /// try await app.asyncShutdown()    // returns after the balancer's run() has returned
    /// ```
    public func shutdownAsync(_ application: Application) async {
        await stop()
    }

    /// Stops the balancer gracefully and blocks the calling thread until `run()` has returned
    /// (synchronous `app.shutdown()`; never called from an async context by Vapor). Bounded by
    /// ``drainTimeout`` plus the balancer's drain plus 5 seconds; a longer stop is logged.
    ///
    /// ```swift
    /// let app = Application(.production)   // the synchronous API
    /// defer { app.shutdown() }             // returns after the balancer's run() has returned
    /// ```
    public func shutdown(_ application: Application) {
        let done = DispatchSemaphore(value: 0)
        Task {
            await self.stop()
            done.signal()
        }
        let bound = drainTimeout + balancer.configuration.effectiveRequestTimeout + .seconds(5)
        if done.wait(timeout: .now() + .nanoseconds(Int(clamping: bound.nanosecondsClamped))) == .timedOut {
            logger.warning("load balancer did not stop within \(bound); continuing application shutdown")
        }
    }

    // MARK: Control

    /// Starts `balancer.run()` if it is not running yet (idempotent; does nothing once stopping).
    ///
    /// ```swift
    /// lifecycle.start()   // e.g. when not using Vapor's lifecycle at all
    /// ```
    public func start() {
        machine.withLock { m in
            guard m.state == .idle else { return }
            m.state = .running
            let balancer = self.balancer
            let logger = self.logger
            m.runTask = Task {
                do {
                    try await balancer.run()
                } catch {
                    logger.error("load balancer run() failed: \(error)")
                }
            }
        }
    }

    /// Stops taking requests, waits for those in flight (at most ``drainTimeout``), calls
    /// `balancer.shutdown()` and waits until `run()` has returned. Idempotent: every caller
    /// waits for the same stop.
    ///
    /// ```swift
    /// await lifecycle.stop()
    /// assert(lifecycle.state == .stopped)
    /// ```
    public func stop() async {
        let stopping = machine.withLock { m -> Task<Void, Never> in
            if let existing = m.stopTask { return existing }
            let running = m.runTask
            m.state = .stopping
            let task = Task { await self.stopSequence(running: running) }
            m.stopTask = task
            return task
        }
        await stopping.value
    }

    private func stopSequence(running: Task<Void, Never>?) async {
        gate.close()
        if !(await gate.waitUntilEmpty(timeout: drainTimeout)) {
            logger.warning("load balancer shutdown: \(gate.inFlight) requests still in flight after \(drainTimeout)")
        }
        balancer.shutdown()
        if let running {
            await running.value
        } else {
            // Never booted: run() returns at once after shutdown() and releases the event loops.
            do { try await balancer.run() } catch { logger.error("load balancer run() failed: \(error)") }
        }
        machine.withLock { $0.state = .stopped }
    }
}
