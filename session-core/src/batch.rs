//! Group commit of [`Session::update`](crate::Session::update)s of one record
//! within this process.
//!
//! Updates of one record take turns on the manager's per-record lock. Unless
//! the record has nobody to gather with lately (below), the first to arrive
//! opens a *gathering* on the record as this process last saved it (or as
//! the request read it, or as loaded), applies its change and spawns the
//! saver; every update that gets the turn before the saver does applies its
//! change to the same gathered record. The saver then writes them all with
//! one compare-and-set. If another process wrote in between, nobody's change
//! is acknowledged: each update runs again on the fresh record. So sixteen
//! requests incrementing one counter cost one round trip, not sixteen pairs,
//! and none is lost.
//!
//! The saver is its own task so that a request cancelled while it waits (its
//! client went away) cannot leave the others waiting. A saver task dropped
//! (its runtime shut down while another runtime shares the manager) answers
//! the members waiting: before its store call, that nothing was saved, and
//! they try again; during it, that the store did not answer, as on a timeout,
//! since trying again could apply a change twice.
//!
//! A store that does not gather ([`Store::group_commit`](crate::Store::group_commit) is `false`: its
//! save costs less than the saver task and the wake-ups) has every update
//! save at once, as below, and opens a gathering only for the exception
//! below.
//!
//! An update that carries its request's earlier pending changes (written
//! with `insert` and the like before it) never saves at once: its saver
//! task records how the save went in a [`Landing`] as soon as it is
//! decided, which the request's other handles read (and, while the store
//! call is under way, wait for) before they apply the request's changes on
//! a record of their own, so that none applies again what the save wrote.
//!
//! A record whose last [`INLINE_AFTER`] saves each carried one update has
//! nobody to gather with: its next updates save at once, holding the turn,
//! without a saver task (cheaper for a session that one client uses at a
//! time). An update that finds the turn taken, or a probe gathering every
//! [`PROBE_EVERY`] updates that others join, switches the record back to
//! gathering. An update that needs a load (no copy of the record to start
//! from) makes its first load before it takes the turn, not while holding
//! it. If a save of that record through the turn began meanwhile (the turn
//! knows the records of its latest four saves), what it loaded may predate
//! that save: unless every such save was decided and the last left the turn
//! a copy of this record no newer than the load, it loads again, this time
//! holding the turn (as any later load of that update does).
//! Cancelled while it saves, an update that saves at once may or may not
//! have been written; it was not acknowledged, and the turn keeps no copy,
//! so the next update reloads.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};

use crate::error::Error;
use crate::id::RecordId;
use crate::manager::Manager;
use crate::observe;
use crate::record::Record;
use crate::store::{Saved, StoreError, StoreErrorKind};

/// How many saves of a record in a row must each carry a single update
/// before its updates save at once instead of gathering.
pub(crate) const INLINE_AFTER: u32 = 4;

/// While updates save at once, one in this many gathers anyway, to notice
/// concurrent updates that never had to wait for the turn (a store that
/// answers without yielding lets each update finish before the next starts).
pub(crate) const PROBE_EVERY: u32 = 16;

/// What a record's turn keeps between updates.
#[derive(Default)]
pub(crate) struct Turn {
    /// The record as this process last saved it: a hint that spares the next
    /// update a load; the compare-and-set proves it current or refutes it.
    /// Shared with the members of the save that wrote it; the next gathering
    /// takes it, copying it only if a member still holds it.
    pub(crate) last: Option<Arc<Record>>,
    /// Changes collected for the next save, while one is being gathered.
    pub(crate) gathering: Option<Gathering>,
    /// Saves in a row of `lone_record` that carried a single update each.
    lone: u32,
    /// The record those saves were of: records share turns.
    lone_record: Option<RecordId>,
    /// Updates saved at once since the last probe gathering.
    since_probe: u32,
    /// Saves begun through this turn (of any record sharing it), wrapping:
    /// an update that let the turn go while it loaded knows by this whether
    /// one of this process's saves may have landed after its load read.
    saves: u64,
    /// What `saves` was when the last of them was decided: behind it while
    /// a save is under way, and after one was dropped mid-call.
    settled: u64,
    /// The records of the latest saves begun through this turn (the first
    /// bytes of their ids), each at its number (`saves` once it began)
    /// modulo [`RECENT_SAVES`]: a load made while only other records' saves
    /// began is still current.
    recent: [u64; RECENT_SAVES],
}

/// How many of the latest saves begun through a turn it keeps the record of.
const RECENT_SAVES: usize = 4;

/// The first eight bytes of a record id: two records sharing them count as
/// one in [`Turn::load_is_current`], which then only reloads needlessly.
fn tag(rid: &RecordId) -> u64 {
    let b = rid.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

impl Turn {
    /// Whether the next update of `rid` should save at once rather than
    /// gather: the last saves of this turn were of `rid`, alone, and no probe
    /// is due.
    pub(crate) fn save_at_once(&mut self, rid: RecordId) -> bool {
        if self.lone < INLINE_AFTER || self.lone_record != Some(rid) {
            return false;
        }
        self.since_probe += 1;
        if self.since_probe >= PROBE_EVERY {
            self.since_probe = 0;
            return false;
        }
        true
    }

    /// Where the count of saves begun through this turn stands.
    pub(crate) fn saves(&self) -> u64 {
        self.saves
    }

    /// Whether a copy of `rid` at `version`, loaded while this turn was let
    /// go (its count of saves at `seen`), is as new as all that this process
    /// saved through the turn meanwhile: no save of `rid` began (of the
    /// latest few, which are known), or every save that began was decided
    /// and the last saved `rid`, at no later version.
    pub(crate) fn load_is_current(&self, rid: RecordId, version: u64, seen: u64) -> bool {
        let began = self.saves.wrapping_sub(seen);
        let others_only = began <= RECENT_SAVES as u64
            && (1..=began).all(|k| self.recent[Self::slot(seen.wrapping_add(k))] != tag(&rid));
        others_only
            || self.saves == self.settled
                && (self.last.as_ref()).is_some_and(|l| l.id == rid && l.version <= version)
    }

    /// Notes that a save of `rid` begins through this turn.
    fn begin_save(&mut self, rid: &RecordId) {
        self.saves = self.saves.wrapping_add(1);
        self.recent[Self::slot(self.saves)] = tag(rid);
    }

    fn slot(number: u64) -> usize {
        // The remainder is below `RECENT_SAVES`.
        (number % RECENT_SAVES as u64) as usize
    }

    /// An update had to wait for the turn: updates overlap, so gather.
    pub(crate) fn contended(&mut self) {
        self.lone = 0;
    }

    /// Whether updates of `rid` currently save at once.
    #[cfg(test)]
    pub(crate) fn saves_at_once(&self, rid: RecordId) -> bool {
        self.lone >= INLINE_AFTER && self.lone_record == Some(rid)
    }
}

/// Updates waiting for one save.
pub(crate) struct Gathering {
    /// The version the save expects to replace.
    base_version: u64,
    /// The base record with every member's changes applied.
    pub(crate) record: Record,
    /// Who waits for the save: `None` for a gathering that no saver task
    /// writes, which nobody joins.
    members: Option<Members>,
    /// Where the requests whose earlier pending changes this save carries
    /// read how it went: made for the first such member.
    landing: Option<Arc<Landing>>,
}

/// How a gathered save that carried some of a request's pending changes
/// went, set when the save is decided: the request's other handles read it
/// before the update that sent those changes takes its outcome (it may wait
/// for the request's state, or not be polled), so that none of them applies
/// the changes again over what other requests wrote since.
///
/// Such a save is always written by a saver task (never by its update
/// saving at once), which goes on whatever the request's handles do: a
/// handle may wait for its decision ([`Landing::settled`]) while holding the
/// request's state.
#[derive(Default)]
pub(crate) struct Landing {
    landed: OnceLock<Landed>,
    /// Set when the save's store call begins.
    writing: AtomicBool,
    decided: Notify,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Landed {
    /// Saved: the record's version that holds the changes.
    At(u64),
    /// A conflict, or the session ended: nothing was written.
    Nothing,
    /// Failed, or stopped during its store call: they may or may not have
    /// been written.
    Unknown,
}

impl Landing {
    /// Whether the changes this save carried are already in `version` of
    /// the record it wrote, or must not be applied again on any version
    /// because whether they were written is unknown. `false` while the save
    /// is under way, and after one that wrote nothing: the changes are
    /// still pending.
    pub(crate) fn covers(&self, version: u64) -> bool {
        match self.landed.get() {
            Some(Landed::At(at)) => *at <= version,
            Some(Landed::Unknown) => true,
            Some(Landed::Nothing) | None => false,
        }
    }

    /// Whether the save's store call has begun and not been answered: a
    /// load answered meanwhile may already hold what it wrote.
    pub(crate) fn in_flight(&self) -> bool {
        self.writing.load(Ordering::SeqCst) && self.landed.get().is_none()
    }

    /// Waits until the save is decided, if its store call has begun.
    pub(crate) async fn settled(&self) {
        loop {
            let mut decided = std::pin::pin!(self.decided.notified());
            // Listening before looking, so a decision in between is heard.
            decided.as_mut().enable();
            if !self.in_flight() {
                return;
            }
            decided.await;
        }
    }

    fn decide(&self, landed: Landed) {
        let _ = self.landed.set(landed);
        self.decided.notify_waiters();
    }
}

/// Held across a save's store call, from its beginning: a save dropped
/// before it was decided (its saver task dropped) may or may not have been
/// written.
struct Deciding(Option<Arc<Landing>>);

impl Deciding {
    fn begin(landing: Option<Arc<Landing>>) -> Self {
        if let Some(landing) = &landing {
            landing.writing.store(true, Ordering::SeqCst);
        }
        Self(landing)
    }

    fn decide(mut self, landed: Landed) {
        if let Some(landing) = self.0.take() {
            landing.decide(landed);
        }
    }
}

impl Drop for Deciding {
    fn drop(&mut self) {
        if let Some(landing) = self.0.take() {
            landing.decide(Landed::Unknown);
        }
    }
}

/// The members of a gathering: one channel per update waiting for its save
/// (a oneshot each costs less than a broadcast when, as usual, one update is
/// alone). Shared with the saver task, so that a saver dropped before it
/// finished (its runtime shut down while another runtime shares the manager,
/// as actix-web's workers each run one) answers the members already waiting
/// instead of leaving them to wait.
#[derive(Clone, Default)]
struct Members(Arc<Mutex<List>>);

#[derive(Default)]
struct List {
    waiting: Vec<oneshot::Sender<Outcome>>,
    /// The saver went away before its store call: nobody will write the
    /// gathering, and updates that would join it try again instead.
    closed: bool,
}

impl Members {
    fn list(&self) -> MutexGuard<'_, List> {
        // Nothing panics while holding it; a poisoned list is still whole.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the members waiting, closing the list to later ones if `close`.
    fn take(&self, close: bool) -> Vec<oneshot::Sender<Outcome>> {
        let mut list = self.list();
        list.closed |= close;
        std::mem::take(&mut list.waiting)
    }
}

impl Gathering {
    /// Opens a gathering on `base` and spawns the task that will save it.
    pub(crate) fn open(manager: &Manager, base: Record) -> Self {
        let members = Members::default();
        let closer = Closer {
            members: Some(members.clone()),
            writing: false,
        };
        // Boxed: the saver's state is large, and a task moves its future
        // several times while spawning it.
        tokio::spawn(Box::pin(save(manager.clone(), base.id, closer)));
        Self {
            members: Some(members),
            ..Self::new(base)
        }
    }

    /// Whether no saver will ever write this gathering: its task was
    /// dropped before its store call, yet the gathering is still waiting in
    /// the turn. Dropping it lets a later update start afresh.
    pub(crate) fn abandoned(&self) -> bool {
        self.members.as_ref().is_some_and(|m| m.list().closed)
    }

    /// A gathering on `base` that no saver task will write: for
    /// [`Gathering::open`], or for an update that writes it itself with
    /// [`write`] while it holds the turn.
    pub(crate) fn new(base: Record) -> Self {
        Self {
            base_version: base.version,
            record: base,
            members: None,
            landing: None,
        }
    }

    /// Where a member that carries earlier pending changes of its request
    /// learns, as soon as the save is decided, whether they were written.
    pub(crate) fn landing(&mut self) -> Arc<Landing> {
        Arc::clone(self.landing.get_or_insert_with(Arc::default))
    }

    /// Whether `landing` is this gathering's: the changes its carrier
    /// carried are in this gathering's record already.
    pub(crate) fn lands_with(&self, landing: &Arc<Landing>) -> bool {
        self.landing
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(l, landing))
    }

    /// Where a member (or an update of another record waiting for the turn)
    /// learns how the save went.
    pub(crate) fn subscribe(&mut self) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        let members = self.members.get_or_insert_with(Members::default);
        let mut list = members.list();
        // Once closed, `tx` is dropped here and `rx` answers at once.
        if !list.closed {
            list.waiting.push(tx);
        }
        rx
    }
}

/// Held by a saver task: answers its gathering's members if the task is
/// dropped before it finished.
struct Closer {
    /// `None` once the task has answered them itself.
    members: Option<Members>,
    /// Whether the task began its store call.
    writing: bool,
}

impl Drop for Closer {
    fn drop(&mut self) {
        let Some(members) = self.members.take() else {
            return;
        };
        // Taken out of the lock before anyone is woken.
        let waiting = members.take(!self.writing);
        if !self.writing {
            // Nothing was written: dropping the senders tells every member
            // to try again.
            return;
        }
        // The save may or may not have landed: trying again could apply a
        // change twice, so each member fails as on a store timeout.
        let failed = Outcome::Failed(Failure {
            op: "save",
            timeout: None,
            kind: StoreErrorKind::Unavailable,
            message: "the task saving the session stopped (its runtime shut down) before the store answered".to_owned(),
        });
        for member in waiting {
            let _ = member.send(failed.clone());
        }
    }
}

/// How a gathered save went, as every member sees it.
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    /// Saved: the record as stored.
    Saved(Arc<Record>),
    /// Another process wrote first: run again on the fresh record.
    Conflict,
    /// The saver went away before its store call: nothing was written; run
    /// again (not a conflict: it does not count against the retries).
    Unsaved,
    /// The session no longer exists.
    Ended,
    /// The store failed or timed out.
    Failed(Failure),
}

/// A store failure, in a form every member can turn into its own [`Error`].
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    op: &'static str,
    timeout: Option<Duration>,
    kind: StoreErrorKind,
    message: String,
}

impl Failure {
    /// A save that did not answer within `after`: it may still land.
    pub(crate) fn timed_out(after: Duration) -> Self {
        Self {
            op: "save",
            timeout: Some(after),
            kind: StoreErrorKind::Other,
            message: String::new(),
        }
    }

    fn of(error: &Error) -> Self {
        match error {
            Error::Timeout { op, after } => Self {
                op,
                timeout: Some(*after),
                kind: StoreErrorKind::Other,
                message: String::new(),
            },
            Error::Store { op, source } => Self {
                op,
                timeout: None,
                kind: source.kind(),
                message: source.to_string(),
            },
            other => Self {
                op: "save",
                timeout: None,
                kind: StoreErrorKind::Other,
                message: other.to_string(),
            },
        }
    }

    pub(crate) fn to_error(&self) -> Error {
        match self.timeout {
            Some(after) => Error::Timeout { op: self.op, after },
            None => Error::Store {
                op: self.op,
                source: StoreError::new(self.kind, self.message.clone()),
            },
        }
    }
}

/// Waits for the outcome of the gathering `rx` belongs to, for at most
/// `limit`: `None` when its saver has not answered by then. The saver waits
/// for the turn, then makes one store call bounded by the store timeout, so
/// `limit` is passed only where something holds it up (a thread of its
/// runtime blocked by a handler, the turn held through a long rotation); it
/// may still write later.
pub(crate) async fn outcome(rx: oneshot::Receiver<Outcome>, limit: Duration) -> Option<Outcome> {
    let answer = crate::deadline::within(limit, rx).await.ok()?;
    // Without a word, the saver went away before its store call (its runtime
    // shut down): nothing was saved, so try again. (One that went away during
    // its store call answers `Failed`: see `Closer`.)
    Some(answer.unwrap_or(Outcome::Unsaved))
}

/// The saver: lets the updates already waiting for the turn join, then
/// writes the gathered record with one compare-and-set, holding the turn so
/// that the next gathering starts from a settled record.
async fn save(manager: Manager, rid: RecordId, mut closer: Closer) {
    tokio::task::yield_now().await;
    let mut turn = manager.record_lock(&rid).lock().await;
    // A turn's gathering is replaced only once gone, and leaves only with its
    // own saver (or as abandoned, once that saver is dropped): what this task
    // finds is its own.
    let Some(gathering) = turn.gathering.take() else {
        return;
    };
    debug_assert!(matches!(
        (&gathering.members, &closer.members),
        (Some(a), Some(b)) if Arc::ptr_eq(&a.0, &b.0)
    ));
    closer.writing = true;
    write(&manager, &mut turn, gathering).await;
    closer.members = None;
}

/// Writes `gathering` with one compare-and-set and tells its members how it
/// went; the caller holds `turn`, which keeps the record as saved.
///
/// Not an `async fn`: one keeps its arguments for its whole life beside what
/// it moves them into, and this future lives inside every update's. Here only
/// the record, the members and the store call are kept across the save.
pub(crate) fn write<'a>(
    manager: &'a Manager,
    turn: &'a mut Turn,
    gathering: Gathering,
) -> impl Future<Output = Outcome> + 'a {
    let Gathering {
        base_version,
        mut record,
        members,
        landing,
    } = gathering;
    let lifetime = record.lifetime.unwrap_or(manager.inner.config.lifetime);
    record.expires_at = lifetime.deadline(record.created_at, manager.now());
    async move {
        // Made on the first poll, which begins the store call: dropped
        // before it, the save wrote nothing and decides nothing.
        let deciding = Deciding::begin(landing);
        turn.begin_save(&record.id);
        let result = manager.save(&mut record, base_version).await;
        settle(turn, record, result, members, deciding)
    }
}

/// After [`write`]'s store call: keeps the record as saved in `turn`, counts
/// towards saving at once, and tells the members.
fn settle(
    turn: &mut Turn,
    record: Record,
    result: Result<Saved, Error>,
    members: Option<Members>,
    deciding: Deciding,
) -> Outcome {
    let rid = record.id;
    turn.settled = turn.saves;
    deciding.decide(match result {
        Ok(Saved::Saved) => Landed::At(record.version),
        Ok(Saved::Conflict | Saved::Missing) => Landed::Nothing,
        Err(_) => Landed::Unknown,
    });
    let outcome = match result {
        Ok(Saved::Saved) => {
            observe::saved(&rid, record.version);
            let record = Arc::new(record);
            turn.last = Some(Arc::clone(&record));
            Outcome::Saved(record)
        }
        Ok(Saved::Conflict) => {
            observe::conflict(&rid);
            turn.last = None;
            Outcome::Conflict
        }
        Ok(Saved::Missing) => {
            observe::ended(&rid);
            turn.last = None;
            Outcome::Ended
        }
        Err(error) => {
            turn.last = None;
            Outcome::Failed(Failure::of(&error))
        }
    };
    let waiting = members.map(|m| m.take(false)).unwrap_or_default();
    // A save that carried one update (a waiting member, or the caller
    // saving at once) counts towards saving at once.
    if waiting.len() > 1 {
        turn.lone = 0;
    } else if turn.lone_record == Some(rid) {
        turn.lone = turn.lone.saturating_add(1);
    } else {
        turn.lone_record = Some(rid);
        turn.lone = 1;
    }
    for member in waiting {
        // A member whose request was cancelled has stopped listening.
        let _ = member.send(outcome.clone());
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A load made while the turn was let go is current when only other
    /// records' saves began meanwhile, of the latest four; past four, the
    /// turn no longer knows, and it is not.
    #[test]
    fn a_load_is_current_while_only_other_records_saves_began() {
        let ours = RecordId::from_bytes([1; 32]);
        let other = RecordId::from_bytes([2; 32]);
        let mut turn = Turn::default();
        let seen = turn.saves();
        assert!(turn.load_is_current(ours, 1, seen), "no save began");
        turn.begin_save(&other);
        turn.begin_save(&other);
        assert!(turn.load_is_current(ours, 1, seen));
        turn.begin_save(&ours);
        assert!(!turn.load_is_current(ours, 1, seen));
        let seen = turn.saves();
        for _ in 0..RECENT_SAVES {
            turn.begin_save(&other);
        }
        assert!(turn.load_is_current(ours, 1, seen));
        let seen = turn.saves();
        turn.begin_save(&ours);
        for _ in 0..RECENT_SAVES {
            turn.begin_save(&other);
        }
        assert!(!turn.load_is_current(ours, 1, seen), "five saves since");
    }

    /// A save dropped during its store call (its saver task went with its
    /// runtime) counts as unknown, and wakes whoever waits for it.
    #[tokio::test]
    async fn a_save_dropped_while_writing_is_decided_unknown() {
        let landing = Arc::new(Landing::default());
        assert!(!landing.in_flight());
        let deciding = Deciding::begin(Some(Arc::clone(&landing)));
        assert!(landing.in_flight() && !landing.covers(u64::MAX));
        let waiting = tokio::spawn({
            let landing = Arc::clone(&landing);
            async move { landing.settled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(deciding);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("still waiting")
            .unwrap();
        assert!(!landing.in_flight() && landing.covers(0));
    }
}
