//! Integration tests of session-core: property-based fuzzing of everything
//! that parses input from the network or from a store, and the conformance
//! suite against `TestStore`, the reference the README points store authors
//! to, also behind `Arc` and the `Instrumented` wrapper, which forward without
//! a future of their own.

mod fuzz;

mod test_store {
    session_core::store_conformance!(async { session_core::testing::TestStore::default() });
}

/// A shared store (`Arc<S>` hands the inner store's futures through).
mod shared_test_store {
    session_core::store_conformance!(async {
        std::sync::Arc::new(session_core::testing::TestStore::default())
    });
}

/// The counting wrapper with no fault set, which hands the inner store's
/// futures through as well.
mod instrumented_test_store {
    session_core::store_conformance!(async {
        session_core::testing::Instrumented::new(session_core::testing::TestStore::default())
    });
}
