//! Varta client (placeholder).
