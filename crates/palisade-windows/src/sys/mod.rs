//! The system calls of the Windows backend (built for Windows only). Every `unsafe` block
//! of the crate is here, each with the reason it is sound.

pub mod acl;
pub mod appcontainer;
pub mod backend;
pub mod broker_client;
pub mod broker_service;
pub mod broker_setup;
pub mod desktop;
pub mod fwp;
pub mod handle;
pub mod job;
pub mod launch;
pub mod links;
pub mod loopback;
pub mod registry;
pub mod token;
pub mod wall;

#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod tests;
