//! Presence.
