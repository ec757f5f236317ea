//! Silences.
