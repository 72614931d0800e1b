import LBKit

// Writing the configuration in effect back out as a config file (`lbserve --check-config`).

extension ConfigFile {
    /// The configuration in effect as a config file (`lbserve --check-config` prints it): every
    /// top-level key in schema order, one per line, in a form ``parse(_:file:base:)`` reads back
    /// to the same settings. The admin token is shown as `"********"`; `health_path` is `null`
    /// while it is the unconfigured default (so a file saved from this output judges probes the
    /// same way); an empty backend list (the demo backends) is left out.
    ///
    /// ```swift
    /// let setup = try LBServeCommandLine.load(["--backend", "http://127.0.0.1:5001"])
    /// print(ConfigFile.render(setup.options, healthPaths: setup.healthPaths))
    /// ```
    public static func render(_ options: LBServeOptions, healthPaths: [String?] = []) -> String {
        let c = options.balancer
        let s = options.serve
        func ms(_ d: Duration) -> String { String(Int64(d.milliseconds.rounded())) }
        func optional(_ text: String?) -> String { text ?? "null" }
        func quote(_ text: String) -> String { JSON.quote(text) }
        func cidrs(_ list: [CIDRRange]) -> String { "[" + list.map { quote($0.description) }.joined(separator: ", ") + "]" }
        var values: [String: String] = [
            "port": String(c.port), "host": quote(c.host),
            "timeout_ms": ms(c.attemptTimeout), "request_timeout_ms": optional(c.requestTimeout.map(ms)),
            "connect_timeout_ms": ms(c.connectTimeout), "max_attempts": String(c.maxAttempts),
            "retry_non_idempotent": String(c.retryNonIdempotent), "hedge_after_ms": optional(c.hedgeAfter.map(ms)),
            "max_fails": String(c.maxFails), "ejection_base_ms": ms(c.ejectionBase), "ejection_max_ms": ms(c.ejectionMax),
            "max_ejected_percent": String(c.maxEjectedPercent), "health_interval_ms": ms(c.healthInterval),
            "health_path": c.healthPathIsExplicit ? quote(c.healthPath) : "null",
            "health_expect_status": optional(c.healthExpectStatus.map { quote($0.description) }),
            "health_timeout_ms": optional(c.healthTimeout.map(ms)), "health_fall": String(c.healthFall),
            "health_rise": String(c.healthRise), "slow_start_ms": ms(c.slowStart), "max_delay_ms": optional(c.maxDelay.map(ms)),
            "max_backend_cpu": optional(c.maxBackendCPU.map(NumericSetting.plain)),
            "max_backend_memory": optional(c.maxBackendMemory.map(NumericSetting.plain)),
            "strategy": quote(c.strategy.rawValue), "rate_limit": optional(c.rateLimit.map(NumericSetting.plain)),
            "burst": optional(c.burst.map(String.init)), "throttle_max_keys": String(c.throttleMaxKeys),
            "penalty_threshold": String(c.penaltyThreshold), "penalty_window_ms": ms(c.penaltyWindow),
            "penalty_duration_ms": ms(c.penaltyDuration), "penalty_factor": String(c.penaltyFactor),
            "trusted_proxies": cidrs(c.trustedProxies), "max_body_bytes": String(c.maxBodyBytes),
            "access_log": String(c.accessLog), "admin_token": c.adminToken == nil ? "null" : quote("********"),
            "admin_allow": cidrs(c.adminAllow), "admin_listen": optional(s.adminListen.map { quote($0.description) }),
            "backend_header": quote(c.backendHeader ?? "off"), "router_health_path": optional(c.routerHealthPath.map(quote)),
            "log_level": quote(s.logLevel.description), "log_format": quote(s.logFormat.rawValue), "threads": String(c.loopCount),
            // The password, like the admin token, is not printed.
            "throttle_store": optional(c.throttleStore.map { quote($0.description) }),
            "throttle_key_prefix": quote(c.throttleKeyPrefix), "throttle_sync_ms": ms(c.throttleSyncInterval),
            "throttle_store_timeout_ms": ms(c.throttleStoreTimeout),
            "resolve_interval_ms": ms(c.resolveInterval),
        ]
        if !c.backends.isEmpty {
            let items = c.backends.enumerated().map { i, url in
                var fields = ["\"url\": \(quote(url.description))", "\"weight\": \(i < c.weights.count ? c.weights[i] : 1)"]
                if i < healthPaths.count, let path = healthPaths[i] { fields.append("\"health_path\": \(quote(path))") }
                return "    {" + fields.joined(separator: ", ") + "}"
            }
            values["backends"] = "[\n" + items.joined(separator: ",\n") + "\n  ]"
        }
        let lines = topLevelKeys.compactMap { key in values[key].map { "  \(quote(key)): \($0)" } }
        return "{\n" + lines.joined(separator: ",\n") + "\n}"
    }
}
