//! Palisade's egress gateway: the only way out of a sandbox. Portable Rust, shared by every
//! platform; the OS layer only has to force traffic to it.
//!
//! This crate holds the pure parts, each tested on its own: the one decision function every
//! path uses ([`decision`]), the classes of address that are never dialled unless listed
//! ([`addr`]), the synthetic loopback addresses the DNS stub hands out ([`pool`]), and the
//! protocol front ends ([`dns`], [`socks5`], [`http`], [`peek`]), and the budgets ([`meter`]).
//! [`server`] serves the listeners; HTTP is parsed and forwarded request by request with
//! `hyper` (`forward`), and what a tunnel carries is checked by its first bytes (`bound`).

#![deny(missing_docs)]

pub mod addr;
mod bound;
pub mod decision;
pub mod dns;
mod dns_listener;
mod forward;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod meter;
pub mod peek;
pub mod pool;
pub mod server;
pub mod socks5;
mod socks_listener;
mod transparent;

/// The outcome of parsing bytes that may arrive in pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse<T> {
    /// More bytes are needed.
    Incomplete,
    /// A value, and how many bytes it took.
    Done(T, usize),
}
