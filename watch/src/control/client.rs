//! Client side (placeholder while the server lands).
