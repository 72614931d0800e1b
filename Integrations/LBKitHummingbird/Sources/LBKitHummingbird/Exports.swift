// `import LBKitHummingbird` brings LBKit with it (configuration, `LoadBalancer`, `ClientAddress`,
// `LBMiddleware`, ...), so an application needs only this module and Hummingbird.
@_exported import LBKit
