//! Varta firmware client (placeholder).
#![no_std]
