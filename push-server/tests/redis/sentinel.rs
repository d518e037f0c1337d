//! Sentinel.
