//! Palisade's policy layer: layered configuration resolved into one explainable policy.
//!
//! Platform neutral and, apart from [`load`], free of I/O: text and [`Vars`] in,
//! [`ResolvedPolicy`] out; [`Rules::decide_path`], [`Rules::decide_net`] and
//! [`Rules::decide_env`] answer for every backend, the gateway and `policy explain`.
//!
//! Layers, lowest first: built-in default < user file < profile < project file (may only
//! narrow) < `--policy` files < command-line flags.

#![deny(missing_docs)]

pub mod builtin;
pub mod decide;
pub mod derive;
pub mod error;
pub mod git;
pub mod host;
pub mod hostfs;
pub mod load;
pub mod model;
pub mod monitor;
pub mod netdecide;
pub mod parse;
pub mod pathrule;
pub mod programs;
pub mod resolve;
pub mod units;
pub mod vars;
pub mod winpath;

pub use decide::{Access, EnvDecision, NetDecision, NetReason, PathDecision};
pub use error::{PolicyError, Site};
pub use host::{Host, HostName, HostPattern, NetPattern, Target};
pub use hostfs::{HostFs, Kind};
pub use model::{Layer, LayerKind, NetMode, Origin, PathKind, Rules, WindowsTier};
pub use netdecide::{Carries, LOCALHOST, LoopbackGrant, NameDecision, is_host_loopback};
pub use parse::parse_layer;
pub use resolve::{ResolveOptions, ResolvedPolicy, resolve};
pub use vars::{Lexical, PathResolver, Vars};
