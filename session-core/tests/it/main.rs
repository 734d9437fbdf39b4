//! Integration tests of session-core: property-based fuzzing of everything
//! that parses input from the network or from a store, and the conformance
//! suite against `TestStore`, the reference the README points store authors
//! to.

mod fuzz;

mod test_store {
    session_core::store_conformance!(async { session_core::testing::TestStore::default() });
}
