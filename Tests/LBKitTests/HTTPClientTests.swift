import Foundation
import Glibc
import Synchronization
import CLBKitShim
import Testing
@testable import LBKit
@testable import LBKitHTTP
@testable import LBKitPolicy
import LBKitTesting
import LBServeSupport

@Suite("HTTP client", .timeLimit(.minutes(1)))
struct HTTPClientTests {
    let group = TestLoops.group
    let client = UpstreamClient()

    func endpoint(_ port: Int) throws -> UpstreamEndpoint {
        UpstreamEndpoint(address: try IPSocketAddress(host: "127.0.0.1", port: port), group: group)
    }

    func get(_ path: String = "/") -> UpstreamRequest {
        UpstreamRequest(head: RequestHead(method: "GET", target: path, headers: ["Host": "t"]))
    }

    @Test("a pooled connection the backend dropped is retried once on a fresh connection")
    func staleConnectionRetried() async throws {
        // Each connection answers its first request only; a second request on it is met with a close.
        let backend = ScriptedBackend { _, n in n == 0 ? ScriptedBackend.ok("fresh") : nil }
        let ep = try endpoint(backend.port)
        let loop = group.loops[0]
        let first = try await client.execute(get(), to: ep, on: loop, timeout: .seconds(2))
        #expect(first.head.status == 200 && !first.reusedConnection)
        let second = try await client.execute(get(), to: ep, on: loop, timeout: .seconds(2))
        #expect(second.head.status == 200)
        #expect(String(decoding: second.body, as: UTF8.self) == "fresh")
        #expect(ep.connectionsOpened == 2)
        #expect(backend.connections.load(ordering: .relaxed) == 2)
        backend.stop()
    }

    @Test("connect refused is reported as never sent")
    func refusedNeverSent() async throws {
        let dead = try PortHolder()  // bound, not listening: connects are refused
        let ep = try endpoint(dead.port)
        do {
            _ = try await client.execute(get(), to: ep, on: group.loops[0], timeout: .seconds(1))
            Issue.record("expected a failure")
        } catch {
            #expect(error.kind == .connectRefused)
            #expect(!error.requestSent)
        }
    }

    @Test("no answer before the deadline: timedOut, request sent")
    func timeout() async throws {
        let backend = ScriptedBackend { _, _ in
            Thread.sleep(forTimeInterval: 5)   // far beyond the 150 ms timeout and the bound below
            return ScriptedBackend.ok("late")
        }
        let ep = try endpoint(backend.port)
        let start = ContinuousClock.now
        do {
            _ = try await client.execute(get(), to: ep, on: group.loops[1], timeout: .milliseconds(150))
            Issue.record("expected a timeout")
        } catch {
            #expect(error.kind == .timedOut)
            #expect(error.requestSent)
        }
        #expect(ContinuousClock.now - start < .seconds(4))
        backend.stop()
    }

    @Test("chunked and read-until-close responses are de-framed")
    func framing() async throws {
        let chunked = ScriptedBackend { _, _ in
            Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\nT: v\r\n\r\n".utf8)
        }
        let r1 = try await client.execute(get(), to: try endpoint(chunked.port), on: group.loops[0], timeout: .seconds(2))
        #expect(String(decoding: r1.body, as: UTF8.self) == "wikipedia")
        let untilClose = ScriptedBackend { _, n in n == 0 ? Array("HTTP/1.1 200 OK\r\n\r\nno length".utf8) : nil }
        // The backend closes after its answer (the script returns nil for the next read).
        let r2 = try await client.execute(UpstreamRequest(head: RequestHead(method: "GET", target: "/", headers: ["Host": "t", "Connection": "close"])),
                                          to: try endpoint(untilClose.port), on: group.loops[0], timeout: .seconds(2))
        #expect(String(decoding: r2.body, as: UTF8.self) == "no length")
        chunked.stop()
        untilClose.stop()
    }

    @Test("soft deadline: an unanswered exchange comes back pending, can be aborted, or finished")
    func pendingExchange() async throws {
        // The backend answers only when the test opens the gate: "pending" never races the clock.
        let gate = DispatchSemaphore(value: 0)
        let backend = ScriptedBackend { _, _ in
            _ = gate.wait(timeout: .now() + 10)
            return ScriptedBackend.ok("eventually")
        }
        let ep = try endpoint(backend.port)
        let loop = group.loops[0]
        func soon(_ ms: Int) -> UInt64 { lbk_monotonic_ns() + UInt64(ms) * 1_000_000 }

        // Pending, then finished.
        let progress = try await client.send(get(), to: ep, on: loop, deadline: soon(2000), answerBy: soon(20))
        guard case .pending(let pending) = progress else { Issue.record("expected pending"); return }
        gate.signal()
        let response = try await client.finish(pending, deadline: soon(2000))
        #expect(String(decoding: response.body, as: UTF8.self) == "eventually")

        // Pending, then aborted: finish ends at once with .aborted.
        let second = try await client.send(get(), to: ep, on: loop, deadline: soon(2000), answerBy: soon(20))
        guard case .pending(let pending2) = second else { Issue.record("expected pending"); return }
        pending2.abortHandle.abort()
        do {
            // The gate stays shut: without the abort this would end only at the 10 s deadline, as .timedOut.
            _ = try await client.finish(pending2, deadline: soon(10_000))
            Issue.record("expected aborted")
        } catch {
            #expect(error.kind == .aborted)
        }
        gate.signal()
        backend.stop()
    }

    @Test("a malformed response is an error, not a crash")
    func malformed() async throws {
        let backend = ScriptedBackend { _, _ in Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".utf8) }
        let ep = try endpoint(backend.port)
        do {
            _ = try await client.execute(get(), to: ep, on: group.loops[0], timeout: .seconds(2))
            Issue.record("expected malformed")
        } catch {
            if case .malformedResponse = error.kind {} else { Issue.record("got \(error.kind)") }
        }
        backend.stop()
    }
}
