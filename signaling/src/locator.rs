//! Where a room lives when several servers share the rooms (a cluster): the contract between the
//! sessions and the server's cluster module.
//!
//! A session asks its [`RoomLocator`] once per `join`, after the token is verified and before anything is
//! admitted. A server without a cluster has no locator and every room is local.

use std::future::Future;
use std::pin::Pin;

/// Where a join for a room goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Location {
    /// This node hosts the room (or has just claimed it): admit here.
    Here,
    /// The room spans nodes and a shard of it opened here for this join: admit here, with the room's
    /// settings and the other nodes' participants if the join creates the room on this node.
    Shard(crate::roster::ShardSeed),
    /// Another node owns the room: the client is sent `redirect` to this signaling URL.
    Elsewhere { url: String },
}

/// Why a room could not be located.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LocateError {
    /// The shared state (Redis) did not answer, so a room this node does not host can be neither found nor
    /// placed.
    #[error("the cluster's shared state is unreachable")]
    Unreachable,
    /// No live node takes new rooms (all draining or at capacity).
    #[error("no node of the cluster takes new rooms")]
    NoCandidate,
}

/// The future a locator returns.
pub type Locating<'a> = Pin<Box<dyn Future<Output = Result<Location, LocateError>> + Send + 'a>>;

/// Finds (or places) the node that owns a room.
pub trait RoomLocator: Send + Sync + 'static {
    /// Where a join of `room` goes. `hosted_here`: the room exists on this node now (its calls go on here
    /// whatever the shared state says, so a locator answers [`Location::Here`] without asking it).
    fn locate<'a>(&'a self, room: &'a str, hosted_here: bool) -> Locating<'a>;
}
