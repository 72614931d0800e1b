// The event loop's fd table: which socket (or parked idle connection) holds each registration.
// Kept apart from LBEventLoop (EventLoop.swift) because its invariants (generations, parking,
// giving room back after a burst) are its own; moved as is.

/// fd-indexed table of registered sockets with a generation per registration, so an event for an
/// fd that was closed (and possibly reused) in the same epoll batch is recognised and dropped.
///
/// A registration is held either by a ``Socket`` or, for a parked idle connection, by a
/// ``ParkedSocket`` entry (no object).
struct SocketRegistry {
    struct Slot {
        var generation: UInt32 = 0
        var socket: Socket?
        var parked: ParkedSocket?
        var isUsed: Bool { socket != nil || parked != nil }
    }
    private var slots: [Slot] = []

    /// Every registered socket (parked ones have none).
    var allSockets: [Socket] { slots.compactMap(\.socket) }
    private var nextGeneration: UInt32 = 1
    /// Registrations, parked ones included.
    private(set) var count = 0
    /// The next sparse-table check happens once `count` is at or below this (see ``shrinkIfSparse()``).
    private var nextShrinkCheck = Int.max

    /// Slots in the table (registered or not), for tests of ``shrinkIfSparse()``.
    var slotCount: Int { slots.count }
    /// A table this small is never shrunk (about 56 KiB).
    static let shrinkFloor = 1024
    /// Free slots kept past the highest registered fd when the table grows or shrinks.
    static let slack = 64

    mutating func insert(_ socket: Socket) -> UInt32 {
        let fd = Int(socket.fd)
        if fd >= slots.count {
            slots.append(contentsOf: repeatElement(Slot(), count: fd + 1 - slots.count + Self.slack))
        }
        if count >= slots.count / 4 { nextShrinkCheck = .max }
        let generation = nextGeneration
        nextGeneration = nextGeneration == .max ? 1 : nextGeneration + 1
        if !slots[fd].isUsed { count += 1 }
        slots[fd] = Slot(generation: generation, socket: socket)
        return generation
    }

    mutating func remove(fd: Int32, generation: UInt32) {
        let i = Int(fd)
        guard i >= 0, i < slots.count, slots[i].generation == generation, slots[i].socket != nil else { return }
        slots[i] = Slot()
        count -= 1
        shrinkIfSparse()
    }

    /// Gives the table's memory back after a burst of connections has ended.
    ///
    /// The table is indexed by fd, so 10,000 connections grow it to 10,000 slots (about 56 bytes
    /// each) and a Swift array never shrinks by itself: an idle server kept about half a MiB per
    /// loop after such a burst. The kernel hands out the lowest free fd first, so once most
    /// registrations are gone the table's tail is empty and is cut off. Amortised O(1): the tail
    /// is scanned only when `count` has fallen to a quarter of the table, and again only after it
    /// halved once more (or the table filled to a quarter again).
    private mutating func shrinkIfSparse() {
        guard count <= nextShrinkCheck, slots.count > Self.shrinkFloor, count <= slots.count / 4 else { return }
        nextShrinkCheck = count / 2
        var end = slots.count
        while end > 0 && !slots[end - 1].isUsed { end -= 1 }
        let kept = max(end + Self.slack, Self.shrinkFloor / 2)
        if kept <= slots.count / 2 {
            slots = Array(slots[..<kept])
            nextShrinkCheck = .max
        }
    }

    func lookup(fd: Int32, generation: UInt32) -> Socket? {
        let i = Int(fd)
        guard i >= 0, i < slots.count, slots[i].generation == generation else { return nil }
        return slots[i].socket
    }

    /// Whether the registration exists (held by a socket or parked).
    func isRegistered(fd: Int32, generation: UInt32) -> Bool {
        let i = Int(fd)
        return i >= 0 && i < slots.count && slots[i].generation == generation && slots[i].isUsed
    }

    func isParked(fd: Int32, generation: UInt32) -> Bool {
        let i = Int(fd)
        return i >= 0 && i < slots.count && slots[i].generation == generation && slots[i].parked != nil
    }

    /// Replaces the registration's socket by `entry` (the caller checked the socket holds it).
    mutating func park(fd: Int32, generation: UInt32, _ entry: ParkedSocket) {
        let i = Int(fd)
        slots[i].socket = nil
        slots[i].parked = entry
    }

    /// Hands a parked registration over to `socket`; returns its entry.
    mutating func unpark(fd: Int32, generation: UInt32, as socket: Socket) -> ParkedSocket? {
        let i = Int(fd)
        guard i >= 0, i < slots.count, slots[i].generation == generation, let entry = slots[i].parked else { return nil }
        slots[i].parked = nil
        slots[i].socket = socket
        return entry
    }

    /// Removes a parked registration whose deadline is at or before `now`.
    mutating func removeParked(fd: Int32, generation: UInt32, dueBy now: UInt64) -> ParkedSocket? {
        let i = Int(fd)
        guard i >= 0, i < slots.count, slots[i].generation == generation,
              let entry = slots[i].parked, entry.deadline <= now else { return nil }
        slots[i] = Slot()
        count -= 1
        shrinkIfSparse()
        return entry
    }

    /// Removes every parked registration matching `predicate`.
    mutating func removeParked(where predicate: (ParkedSocket) -> Bool) -> [(Int32, ParkedSocket)] {
        var taken: [(Int32, ParkedSocket)] = []
        for i in slots.indices {
            guard let entry = slots[i].parked, predicate(entry) else { continue }
            taken.append((Int32(i), entry))
            slots[i] = Slot()
            count -= 1
        }
        shrinkIfSparse()
        return taken
    }
}

/// Who gets a parked connection back (see ``LBEventLoop/park(_:until:owner:token:)``). Called on
/// the loop's thread, except ``parkedSocketGone(token:)`` from ``LBEventLoop/closeParked(owner:)``
/// (the caller's thread); neither may block.
protocol ParkedSocketOwner: AnyObject, Sendable {
    /// The parked connection may have bytes to read (or reached EOF): `socket` is its new socket
    /// object, registered; `deadline` and `token` are those given to `park`.
    func parkedSocketReady(_ socket: Socket, deadline: UInt64, token: UInt64)
    /// The parked connection was closed (its deadline passed, shutdown, or the loop stopped).
    func parkedSocketGone(token: UInt64)
}

/// A parked connection's entry in its loop's fd table.
struct ParkedSocket {
    var deadline: UInt64
    var owner: any ParkedSocketOwner
    var token: UInt64
}
