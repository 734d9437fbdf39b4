//! Integration tests of session-core: property-based fuzzing of everything
//! that parses input from the network or from a store.

mod fuzz;
