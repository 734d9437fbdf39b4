//! Hostile input, generated: cookies, ids, records and values. Whatever
//! arrives, nothing panics, nothing unverified reaches the store, and
//! nothing allocates without bound. Each property runs a few hundred cases
//! in `cargo test` (seconds); `PROPTEST_CASES=100000 cargo test -p
//! session-core --all-features --test it --release fuzz` runs a long campaign. Failing cases
//! are kept in `proptest-regressions/` and replayed first.

use std::collections::BTreeMap;

use base64::Engine as _;
use proptest::prelude::*;
use session_core::testing::{Instrumented, TestStore};
use session_core::Timestamp;
use session_core::{
    Config, CookieKeys, CookieSecurity, Id, Key, Manager, Record, RecordId, SetCookie,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn manager(security: CookieSecurity) -> (Manager, Instrumented<TestStore>) {
    let store = Instrumented::new(TestStore::default());
    let config = Config::builder()
        .with_security(security)
        .build()
        .expect("config");
    (Manager::new(store.clone(), config), store)
}

fn modes() -> Vec<CookieSecurity> {
    let keys = CookieKeys::new(Key::generate());
    vec![
        CookieSecurity::Plain,
        CookieSecurity::Signed(keys.clone()),
        CookieSecurity::Private(keys),
    ]
}

/// A stored session; returns the cookie value that carries it.
fn stored(rt: &tokio::runtime::Runtime, m: &Manager) -> String {
    rt.block_on(async {
        let s = m.session_from_cookies(None::<&str>);
        s.insert("name", "iris").await.unwrap();
        match s.commit().await.unwrap() {
            SetCookie::Set { value, .. } => value,
            other => panic!("{other:?}"),
        }
    })
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=N runs N (`with_cases` would ignore it).
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn id_parsing_is_total_and_canonical(text in ".{0,64}") {
        if let Ok(id) = Id::parse(&text) {
            prop_assert_eq!(id.to_string(), text.clone());
        }
        let _ = RecordId::parse(&text);
    }

    #[test]
    fn every_32_byte_value_is_an_id_with_one_text_form(bytes in prop::array::uniform32(any::<u8>())) {
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let id = Id::parse(&text).expect("canonical text parses");
        prop_assert_eq!(id.to_string(), text);
    }

    #[test]
    fn arbitrary_cookie_headers_never_panic_or_reach_the_store(header in "\\PC{0,300}") {
        let rt = runtime();
        for security in modes() {
            let signed = !matches!(security, CookieSecurity::Plain);
            let (m, store) = manager(security);
            let s = m.session_from_cookies([header.as_str()]);
            let empty = rt.block_on(s.is_empty()).expect("no store error");
            prop_assert!(empty);
            if signed {
                prop_assert_eq!(store.counts().total(), 0);
            }
        }
    }

    #[test]
    fn session_cookies_among_junk_are_found_only_when_valid(
        junk in "[ -~]{0,100}",
        position in 0usize..3,
    ) {
        let rt = runtime();
        let (m, store) = manager(CookieSecurity::Signed(CookieKeys::new(Key::generate())));
        let value = stored(&rt, &m);
        let before = store.counts().total();
        let mut parts = vec![junk.clone(), "other=1".to_owned()];
        parts.insert(position.min(parts.len()), format!("session={value}"));
        let header = parts.join("; ");
        let s = m.session_from_cookies([header.as_str()]);
        // The junk may be split into pairs, none of which verifies: the real
        // cookie wins unless the junk holds so many `session` pairs before it
        // that it is past the eight values a request may present.
        let name = rt.block_on(s.get_string("name")).expect("load");
        let at = session_core::cookie_values([header.as_str()], "session").position(|v| v == value);
        prop_assert!(at.is_some(), "the real cookie is parsed out of {:?}", header);
        if at < Some(8) {
            prop_assert_eq!(name, "iris");
        } else {
            prop_assert_eq!(name, "");
        }
        prop_assert!(store.counts().total() - before <= 1);
    }

    #[test]
    fn a_tampered_cookie_never_opens_the_session(index in any::<prop::sample::Index>(), replacement in "[A-Za-z0-9_-]") {
        let rt = runtime();
        for security in modes() {
            let (m, store) = manager(security.clone());
            let value = stored(&rt, &m);
            let i = index.index(value.len());
            let mut bytes = value.clone().into_bytes();
            let replacement = replacement.as_bytes()[0];
            if bytes[i] == replacement {
                continue;
            }
            bytes[i] = replacement;
            let tampered = String::from_utf8(bytes).expect("ascii");
            let before = store.counts().total();
            let header = format!("session={tampered}");
            let s = m.session_from_cookies([header.as_str()]);
            let name = rt.block_on(s.get_string("name")).expect("load");
            prop_assert_eq!(name, "", "tampered cookie opened the session ({:?})", security);
            if !matches!(security, CookieSecurity::Plain) {
                prop_assert_eq!(store.counts().total(), before, "a forged cookie reached the store");
            }
        }
    }

    #[test]
    fn record_decoding_is_total(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = Record::from_bytes(&bytes);
    }

    #[test]
    fn records_round_trip(
        data in prop::collection::btree_map("\\PC{0,20}", prop::collection::vec(any::<u8>(), 0..64), 0..20),
        version in any::<u64>(),
        owner in prop::option::of("\\PC{1,40}"),
        created in 0i64..4_000_000_000_000,
        ttl in 0i64..100_000_000,
    ) {
        let at = Timestamp::from_unix_millis;
        let mut r = Record::new(Id::generate().unwrap().record_id(), at(created), at(created + ttl));
        r.data = data.into_iter().collect();
        r.version = version;
        r.owner = owner;
        let bytes = r.to_bytes().unwrap();
        prop_assert_eq!(Record::from_bytes(&bytes).unwrap(), r);
    }

    #[test]
    fn corrupted_records_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let now = Timestamp::from_unix_millis(1_700_000_000_000);
        let mut r = Record::new(Id::generate().unwrap().record_id(), now, now + std::time::Duration::from_secs(3600));
        r.data.insert("name".into(), b"\xa4iris".to_vec());
        r.owner = Some("alice".into());
        let mut bytes = r.to_bytes().unwrap();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let _ = Record::from_bytes(&bytes);
        let _ = Record::from_bytes(&bytes[..cut.index(bytes.len())]);
    }

    #[test]
    fn hostile_stored_values_fail_only_their_own_read(value in prop::collection::vec(any::<u8>(), 0..512)) {
        let rt = runtime();
        let store = TestStore::default();
        let m = Manager::new(store.clone(), Config::default());
        let cookie = stored(&rt, &m);
        let rid = Id::parse(&cookie).unwrap().record_id();
        let mut record = rt.block_on(session_core::Store::load(&store, &rid)).unwrap().unwrap();
        record.data.insert("hostile".into(), value);
        store.put_raw(record);
        let header = format!("session={cookie}");
        let s = m.session_from_cookies([header.as_str()]);
        rt.block_on(async {
            let _ = s.get::<String>("hostile").await;
            let _ = s.get::<u64>("hostile").await;
            let _ = s.get::<Vec<String>>("hostile").await;
            let _ = s.get::<BTreeMap<String, Vec<u8>>>("hostile").await;
            let _ = s.get::<(bool, f64, Option<char>)>("hostile").await;
            assert_eq!(s.get_string("name").await.unwrap(), "iris");
        });
    }
}

#[test]
fn huge_declared_lengths_do_not_allocate_them() {
    // MessagePack headers that claim 4 GiB of map entries, array items,
    // string and binary bytes, at the start and inside a record.
    let claims: [&[u8]; 4] = [
        &[0xdf, 0xff, 0xff, 0xff, 0xff],
        &[0xdd, 0xff, 0xff, 0xff, 0xff],
        &[0xdb, 0xff, 0xff, 0xff, 0xff],
        &[0xc6, 0xff, 0xff, 0xff, 0xff],
    ];
    for claim in claims {
        assert!(Record::from_bytes(claim).is_err());
        let mut inside = vec![0x81, 0xa1, b'd'];
        inside.extend_from_slice(claim);
        assert!(Record::from_bytes(&inside).is_err());
    }
}
