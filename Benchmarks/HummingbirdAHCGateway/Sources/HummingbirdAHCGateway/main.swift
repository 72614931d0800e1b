import AsyncHTTPClient
import HTTPTypes
import Hummingbird
import NIOHTTP1
import Synchronization

// Bench only. usage: PORT=8493 HummingbirdAHCGateway http://127.0.0.1:5001 http://127.0.0.1:5002 ...
// /api/* forwarded round robin (prefix stripped) with the shared AsyncHTTPClient: method, path,
// headers and body in; status, headers and body out. No failover, ejection or limiting.
final class RoundRobin: Sendable {
    let backends: [String]
    let next = Atomic<Int>(0)
    init(_ backends: [String]) { self.backends = backends }
    func pick() -> String { backends[next.add(1, ordering: .relaxed).oldValue % backends.count] }
}
let hopByHop: Set<String> = ["connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer",
                             "proxy-connection", "content-length", "host"]
let pool = RoundRobin(Array(CommandLine.arguments.dropFirst()))
let port = Environment().get("PORT").flatMap { Int($0) } ?? 8493

@Sendable func forward(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
    let path = request.uri.path.dropFirst("/api".count)
    let query = request.uri.query.map { "?" + $0 } ?? ""
    var upstream = HTTPClientRequest(url: pool.pick() + (path.isEmpty ? "/" : path) + query)
    upstream.method = HTTPMethod(rawValue: request.method.rawValue)
    for field in request.headers where !hopByHop.contains(field.name.canonicalName) {
        upstream.headers.add(name: field.name.rawName, value: field.value)
    }
    let body = try await request.body.collect(upTo: 8 << 20)
    if body.readableBytes > 0 { upstream.body = .bytes(body) }
    let response = try await HTTPClient.shared.execute(upstream, timeout: .seconds(30))
    var headers = HTTPFields()
    for (name, value) in response.headers where !hopByHop.contains(name.lowercased()) {
        if let field = HTTPField.Name(name) { headers.append(HTTPField(name: field, value: value)) }
    }
    let bytes = try await response.body.collect(upTo: 8 << 20)
    return Response(status: .init(code: Int(response.status.code)), headers: headers, body: .init(byteBuffer: bytes))
}

let router = Router()
for method in [HTTPRequest.Method.get, .head, .post, .put, .delete, .patch, .options] {
    router.on("/api/**", method: method, use: forward)
}
let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)))
try await app.runService()
