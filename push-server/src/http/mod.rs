//! The HTTP layer.

pub(crate) mod body;
