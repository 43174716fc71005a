//! vastgate: the front door (an authenticating reverse proxy) and the caretaker (a process
//! supervisor) of a GPU container, in one binary.

pub mod auth;
pub mod config;
pub mod gateway;
pub mod healthcheck;
pub mod supervisor;
pub mod up;
pub mod vast;
