#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod after;
mod batch;
mod clock;
mod codec;
mod config;
mod deadline;
mod envelope;
mod error;
mod id;
mod manager;
mod observe;
mod record;
mod session;
mod store;
mod sweeper;
mod timestamp;
mod transport;
mod view;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(any(test, feature = "conformance"))]
pub mod testing;

pub use after::CommitAfter;
pub use async_trait::async_trait;
pub use erased_serde;
/// The `time` crate, whose `OffsetDateTime` [`Session::expires_at`] and
/// [`SessionView`]'s times are, with only its `std` feature: reading and
/// printing them needs no dependency of your own (`time`'s `formatting`
/// feature, in your own `time` dependency, adds `format`).
///
/// ```
/// use session_core::time::OffsetDateTime;
///
/// let t = OffsetDateTime::UNIX_EPOCH;
/// let shown = format!("{}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day());
/// assert_eq!(shown, "1970-01-01");
/// ```
pub use time;

pub use clock::{Clock, ManualClock, SystemClock};
#[cfg(feature = "json")]
pub use codec::JsonCodec;
pub use codec::{Codec, CodecError, DecodeVisitor, MessagePack};
pub use config::{
    Config, ConfigBuilder, ConfigError, CookieKeys, CookieSecurity, Key, SameSite,
    MAX_CONFLICT_RETRIES,
};
pub use error::{Error, Result};
pub use id::{Id, InvalidId, RandomError, RecordId, ID_BYTES, ID_TEXT_LEN, RECORD_ID_TEXT_LEN};
pub use manager::Manager;
pub use record::{Data, Lifetime, Record, RecordDecodeError};
pub use session::{Session, MAX_OWNER_LEN};
pub use store::{Created, Saved, Store, StoreError, StoreErrorKind};
pub use sweeper::Sweeper;
pub use timestamp::Timestamp;
pub use transport::{cookie_values, header_text, join_header_values, HeaderUpdate, SetCookie};
pub use view::SessionView;
