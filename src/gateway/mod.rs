//! The gateway: accept, canonicalize, route, authenticate, forward or tunnel, log.

pub mod path;
