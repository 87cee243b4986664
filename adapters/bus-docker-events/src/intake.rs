//! Intake follows capacity (contract §5): a source that can stop taking
//! run requests while the worker has no room for them.
//!
//! The worker publishes "run intake open" as a `watch::Receiver<bool>`;
//! a source given it with [`FollowsIntake::follow_intake`] takes run
//! requests only while it reads `true`. Every other request (status,
//! input, delete, `runner.*`) keeps flowing: those are how a full worker's
//! runs are watched and stopped.
//!
//! # Why the HTTP source closes the run stream instead of not reading it
//!
//! A unicast group of the Bus Events API hands each event to one connected
//! consumer. The local server (`bus-events-local`, broker.rs) shows how: a
//! consumer is offered the next event whenever its HTTP body is polled, and
//! the server polls it whenever the socket has room; an event written to
//! the socket counts as delivered. A worker that merely stopped *reading*
//! its open stream would therefore keep being handed events: they would
//! sit in its socket buffers (hundreds of small run requests fit) and no
//! other consumer could get them. So while intake is closed the HTTP
//! source has no run stream at all: it drops the connection, and the
//! server takes the consumer out of the group's rotation; events go to the
//! group's other consumers, or wait in the group's backlog until one (this
//! worker included, when it reconnects) is there to take them. Requests the
//! stream had already received before it was closed are still handed to
//! the worker, which answers `capacity` if there is no room for them.
//!
//! What this cannot do: a request the server wrote in the instant between
//! the worker's last read and the server seeing the connection close is
//! counted as delivered by a server that (like the local one) does not
//! redeliver, and is lost with the connection. Intake closes on the
//! admission that fills the worker, so the window is short, but it is the
//! price of the contract's at-most-once streams. A reconnecting consumer
//! may also be handed more of the group's backlog than it has room for;
//! those get `capacity`, as a request already taken does.

use tokio::sync::watch;

/// A source whose run requests can follow the worker's intake.
pub trait FollowsIntake {
    /// From now on, take run requests only while `intake` reads `true`.
    /// When the worker side of `intake` goes away, run requests flow again.
    fn follow_intake(&mut self, intake: watch::Receiver<bool>);
}
