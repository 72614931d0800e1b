import Hummingbird
import LBKit
import LBKitHummingbird
import LBKitTesting
import Logging
import ServiceLifecycle
import ServiceLifecycleTestKit
import Testing

extension IntegrationTests {
    @Test("a ServiceGroup with the LoadBalancerService returns within 2 s of triggerGracefulShutdown")
    func gracefulShutdownOfService() async throws {
        let backends = try EchoBackends(count: 2)
        let balancer = try LoadBalancer(configuration: testConfiguration(backends.urls))
        let group = ServiceGroup(configuration: .init(services: [LoadBalancerService(balancer: balancer)], logger: quietLogger))
        let running = Task { try await group.run() }
        // Let the health checks run a round, so there is work in progress to stop.
        try await Task.sleep(for: .milliseconds(600))
        let clock = ContinuousClock()
        let start = clock.now
        await group.triggerGracefulShutdown()
        try await withDeadline(.seconds(2), "ServiceGroup.run after graceful shutdown") { try await running.value }
        #expect(clock.now - start < .seconds(2))
        try await backends.shutdown()
    }

    @Test("application + balancer in one ServiceGroup: serves, then stops within 2 s of graceful shutdown")
    func gracefulShutdownOfApplication() async throws {
        let backends = try EchoBackends(count: 3)
        let balancer = try LoadBalancer(configuration: testConfiguration(backends.urls))
        let router = Router(context: BalancerRequestContext.self)
        router.add(middleware: LoadBalancerMiddleware(balancer: balancer, pathPrefix: "/api"))
        let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
        var app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { portSink.yield($0.localAddress?.port ?? 0) }, logger: quietLogger)
        app.addServices(LoadBalancerService(balancer: balancer))
        let group = ServiceGroup(configuration: .init(services: [app], logger: quietLogger))
        let running = Task { try await group.run() }
        let port = try await withDeadline(.seconds(10), "server start") {
            var iterator = ports.makeAsyncIterator()
            return await iterator.next() ?? 0
        }
        let reply = try await RawHTTP.request("POST", "/api/x", port: port, body: #"{"msg":"hi"}"#)
        #expect(reply.status == 200)
        #expect(backends.ports.contains(handledBy(reply.body) ?? -1))

        let clock = ContinuousClock()
        let start = clock.now
        await group.triggerGracefulShutdown()
        try await withDeadline(.seconds(2), "application ServiceGroup after graceful shutdown") { try await running.value }
        #expect(clock.now - start < .seconds(2))
        try await backends.shutdown()
    }

    @Test("graceful shutdown alone (no cancellation) makes LoadBalancerService.run return")
    func gracefulShutdownWithoutCancellation() async throws {
        let backends = try EchoBackends(count: 1)
        let balancer = try LoadBalancer(configuration: testConfiguration(backends.urls))
        let service = LoadBalancerService(balancer: balancer)
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await service.run() }
                try await Task.sleep(for: .milliseconds(100))
                trigger.triggerGracefulShutdown()
                let clock = ContinuousClock()
                let start = clock.now
                // Not cancelled: only the graceful-shutdown handler can end run() here.
                try await tasks.next()
                #expect(clock.now - start < .seconds(2))
            }
        }
        try await backends.shutdown()
    }

    @Test("a request in flight during graceful shutdown still completes, and the group stops within 2 s")
    func gracefulShutdownDrainsInFlight() async throws {
        let backends = try EchoBackends(count: 1, mode: .slow, delay: .milliseconds(400))
        let balancer = try LoadBalancer(configuration: testConfiguration(backends.urls) { $0.healthInterval = .zero })
        let router = Router(context: BalancerRequestContext.self)
        router.add(middleware: LoadBalancerMiddleware(balancer: balancer, pathPrefix: "/api"))
        let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
        var app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { portSink.yield($0.localAddress?.port ?? 0) }, logger: quietLogger)
        app.addServices(LoadBalancerService(balancer: balancer))
        let group = ServiceGroup(configuration: .init(services: [app], logger: quietLogger))
        let running = Task { try await group.run() }
        let port = try await withDeadline(.seconds(10), "server start") {
            var iterator = ports.makeAsyncIterator()
            return await iterator.next() ?? 0
        }
        let inFlight = Task { try await RawHTTP.request("POST", "/api/slow", port: port, body: #"{"msg":"slow"}"#) }
        try await Task.sleep(for: .milliseconds(100))
        let clock = ContinuousClock()
        let start = clock.now
        await group.triggerGracefulShutdown()
        try await withDeadline(.seconds(2), "application ServiceGroup with a request in flight") { try await running.value }
        #expect(clock.now - start < .seconds(2))
        let reply = try await withDeadline(.seconds(2), "in-flight request") { try await inFlight.value }
        #expect(reply.status == 200)
        #expect(jsonObject(reply.body)?["msg"] as? String == "slow")
        try await backends.shutdown()
    }

    @Test("cancelling the task that runs the service stops the balancer too")
    func cancellation() async throws {
        let backends = try EchoBackends(count: 1)
        let balancer = try LoadBalancer(configuration: testConfiguration(backends.urls))
        let service = LoadBalancerService(balancer: balancer)
        let running = Task { try await service.run() }
        try await Task.sleep(for: .milliseconds(100))
        running.cancel()
        try await withDeadline(.seconds(2), "LoadBalancerService.run after cancellation") { try await running.value }
        try await backends.shutdown()
    }
}
