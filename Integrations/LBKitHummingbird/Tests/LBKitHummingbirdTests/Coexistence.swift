// Coexistence check: LBKit next to Hummingbird, swift-http-types and SwiftNIO in one file, every
// LBKit name unqualified. This file only has to compile.
//
// The two collisions found here first (swift-log 1.16's `LogEvent`, NIOCore's `SocketAddressError`)
// were fixed in LBKit by renaming its types to `LBLogEvent` and `IPSocketAddressError`.
import HTTPTypes
import Hummingbird
import LBKit
import NIOCore
import NIOHTTP1

enum Coexistence {
    // Theirs.
    static func theirs(_ request: HTTPRequest, _ response: HTTPResponse, _ headers: HTTPHeaders, _ group: any EventLoopGroup,
                       _ address: SocketAddress, _ context: some RequestContext) -> String {
        "\(request.method) \(response.status) \(headers.count) \(address) \(type(of: group)) \(type(of: context))"
    }

    // Ours, unqualified.
    static func ours(_ balancer: LoadBalancer, _ group: LBEventLoopGroup, _ address: IPSocketAddress,
                     _ client: UpstreamClient, _ server: HTTP1Server, _ policy: ReplayPolicy) async -> LBResponse {
        var headers = HeaderFields()
        headers.add(name: "Host", value: address.description)
        let request = LBRequest(head: RequestHead(method: "GET", target: "/", headers: headers))
        let context = LBRequestContext(client: address.clientAddress)
        _ = (group.loops.count, client, server.localAddress, policy.mayReplay(method: "GET", hasIdempotencyKey: false))
        var response = await balancer.handle(request, context: context)
        response.head = ResponseHead(status: response.status, headers: response.head.headers)
        return response
    }

    // Both in one signature.
    static func both(_ lb: LBRequest, _ hb: HTTPRequest, _ lbHeaders: HeaderFields, _ nioHeaders: HTTPHeaders,
                     _ fields: HTTPFields, _ lbGroup: LBEventLoopGroup, _ nioGroup: any EventLoopGroup) -> Int {
        _ = nioGroup.next()
        return lb.headers.count + nioHeaders.count + fields.count + lbGroup.loops.count + (hb.path?.count ?? 0) + lbHeaders.count
    }
}
