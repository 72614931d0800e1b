import LBKit
