//! Rocket adapter for session-core: a fairing and a Session request guard.
//!
//! **Not implemented yet.** This crate is a member of the workspace so that its
//! place in the layout is fixed; it exports nothing until its issue lands. See
//! the workspace `README.md` for the crates that work today.
