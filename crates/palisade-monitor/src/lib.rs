//! Palisade's monitor: one event model for every layer ([`event`]), and the append-only,
//! hash-chained audit log ([`audit`]) that `palisade audit verify` checks.

#![deny(missing_docs)]

pub mod audit;
pub mod event;
pub mod fold;
pub mod live;
pub mod rules;
pub mod sessions;

pub use audit::{AuditLog, Sink, Summary, VerifyError, verify};
pub use event::{Event, SCHEMA_VERSION, Totals};
