//! session-redis against real servers: the conformance suite on a Redis server
//! and on a Redis Cluster, and failure behaviour against a throwaway server
//! that the tests stop and pause.
//!
//! * `REDIS_URL` (default `redis://127.0.0.1:6379`): the server for the
//!   conformance suite (also across two separately connected stores). Each test uses its own key prefix and deletes its keys.
//! * `REDIS_CLUSTER_URLS` (comma-separated): a cluster; `cargo xtask test`
//!   starts a throwaway 3-master cluster and sets it.
//! * The fault tests start their own `redis-server` on a free port, and the
//!   TLS tests (feature `tls-rustls`) TLS-only ones (a server, and a Cluster
//!   of three) under a certificate authority they make with `openssl`.
//!
//! Where a server is missing the tests say SKIPPED loudly, except in CI
//! (`CI=true`), where that is a failure.

mod faults;
mod support;
#[cfg(feature = "tls-rustls")]
mod tls;
mod writes;

mod standalone {
    session_core::store_conformance!(optional: crate::support::standalone());
}

mod cluster {
    session_core::store_conformance!(optional: crate::support::cluster());
}

/// Two app servers' stores over one server and prefix.
mod standalone_across_instances {
    session_core::store_conformance_across_instances!(optional: crate::support::standalone_pair());
}

/// Two app servers' stores over one Cluster and prefix.
mod cluster_across_instances {
    session_core::store_conformance_across_instances!(optional: crate::support::cluster_pair());
}
