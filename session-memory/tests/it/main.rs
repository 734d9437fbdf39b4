//! Integration tests of session-memory: the store conformance suite for
//! `MemoryStore` and for `CachedStore` over it.

mod memory {
    session_core::store_conformance!(async { session_memory::MemoryStore::new() });
}

mod cached {
    session_core::store_conformance!(async {
        session_memory::CachedStore::builder(session_memory::MemoryStore::new()).build()
    });
}
