//! deed-store.
