//! Canonical request paths.
