//! Exit statuses, the conventions of `env`, `timeout` and container runtimes; owned by the
//! portable session ([`palisade_sandbox::exit`]), where a run's status is decided.

pub use palisade_sandbox::exit::FAILURE;
