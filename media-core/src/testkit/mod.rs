//! What tests, benchmarks and the load tester need around the core, and production code never uses:
//! a simulated network with a seeded random source ([`sim`]), tone generation and analysis ([`analysis`]),
//! and reproducible DTLS timers for simulations ([`dtls`]); the client peer ([`client`]) is a production
//! module now and re-exported here under its old path. Compiled for this crate's own tests and, for other crates, with
//! the `testkit` feature.

pub mod analysis;
pub mod dtls;
pub mod sim;

/// The client peer, a production module now (`media_core::client`, feature `client`), under its old path.
pub use crate::client;
