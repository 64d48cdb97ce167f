//! runtime

pub mod trace;
