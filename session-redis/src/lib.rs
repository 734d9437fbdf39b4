//! Redis (standalone and Cluster) session store for session-core.
//!
//! **Not implemented yet.** This crate is a member of the workspace so that its
//! place in the layout is fixed; it exports nothing until its issue lands. See
//! the workspace `README.md` for the crates that work today.
