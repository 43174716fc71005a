//! proxy.toml.
