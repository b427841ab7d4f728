//! Two and three shippers on one table, their steps ordered by hand: the races a test
//! server cannot make happen on purpose.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::ledger::mark::End;

pub(super) const LEASE: Duration = Duration::from_secs(60);

/// A clock the test moves.
#[derive(Clone, Default)]
pub(super) struct Clock(Arc<AtomicU64>);

impl Clock {
    pub(super) fn monotonic(&self) -> Monotonic {
        let c = self.0.clone();
        Arc::new(move || Duration::from_secs(c.load(Ordering::SeqCst)))
    }
    pub(super) fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

pub(super) fn shipper(table: &Arc<dyn Table>, clock: &Clock) -> SharedLedger {
    SharedLedger::new(
        Box::new(table.clone()),
        "t",
        LEASE,
        3600,
        Some(clock.monotonic()),
    )
}

fn claimable(id: &str) -> Claimable<'_> {
    Claimable {
        id,
        size: 10,
        modified: (1, 0),
        forget_by: None,
    }
}

fn claim(l: &SharedLedger, id: &str) -> bool {
    !l.claim(&[claimable(id)], 100, Honour::Redelivery)
        .unwrap()
        .is_empty()
}

fn mark(id: &str, position: u64, end: Option<End>) -> Mark {
    Mark {
        id: id.into(),
        events: position,
        position,
        end,
        ..Mark::default()
    }
}

fn table() -> Arc<dyn Table> {
    Arc::new(MemTable::default())
}

#[test]
fn a_graceful_stop_hands_the_committed_position_to_the_next_shipper_at_once() {
    let (t, clock) = (table(), Clock::default());
    let a = shipper(&t, &clock);
    let b = shipper(&t, &clock);
    assert!(claim(&a, "x"));
    assert!(!claim(&b, "x"), "A's lease is live");
    assert!(b.held_elsewhere("x"));
    a.commit(&[mark("x", 507, None)], 101, Backoff::TRANSIENT)
        .unwrap();
    assert_eq!(a.let_go_all(), 0);
    assert!(claim(&b, "x"), "given up: no lease time to wait");
    assert_eq!(b.entry("x").unwrap().unwrap().position, 507);
    let done = b
        .commit(&[mark("x", 3000, Some(End::Done))], 102, Backoff::TRANSIENT)
        .unwrap();
    assert_eq!(done.done, 1);
    let row = b.row("x").unwrap().unwrap();
    assert_eq!(row.owner, None);
    assert_eq!(
        row.expires,
        Some(102 + 3600),
        "done rows expire a lookback later"
    );
    assert!(!claim(&a, "x"), "done for every shipper");
}

#[test]
fn a_crashed_shippers_lease_moves_after_the_lease_time_on_the_observers_clock() {
    let (t, clock) = (table(), Clock::default());
    let a = shipper(&t, &clock);
    let b = shipper(&t, &clock);
    assert!(claim(&a, "x"));
    a.commit(&[mark("x", 40, None)], 101, Backoff::TRANSIENT)
        .unwrap();
    a.forget_claims(); // killed: nothing written
    assert!(!claim(&b, "x"), "first sight of A's lease starts B's count");
    clock.advance(59);
    assert!(!claim(&b, "x"), "59 s of a 60 s lease");
    clock.advance(1);
    assert!(claim(&b, "x"), "the counter stood still for the lease time");
    assert_eq!(b.entry("x").unwrap().unwrap().position, 40);
    let row = b.row("x").unwrap().unwrap();
    assert_eq!(row.owner.as_deref(), Some(b.owner()));
    assert_eq!(
        row.lease, 3,
        "A's claim, A's commit and B's claim each bump the counter"
    );
    let b_counts: Vec<(&str, u64)> = b
        .counts
        .named()
        .iter()
        .map(|(n, _, v)| (*n, *v))
        .filter(|(_, v)| *v > 0)
        .collect();
    assert!(
        b_counts.contains(&("ledger_takeovers_total", 1))
            && b_counts.contains(&("ledger_held_elsewhere_total", 2)),
        "{b_counts:?}"
    );
}

#[test]
fn a_renewed_lease_is_never_taken_whatever_the_clocks_say() {
    let (t, clock_a, clock_b) = (table(), Clock::default(), Clock::default());
    let a = shipper(&t, &clock_a);
    let b = shipper(&t, &clock_b);
    assert!(claim(&a, "x"));
    for _ in 0..5 {
        assert!(!claim(&b, "x"));
        clock_a.advance(25);
        assert!(a.renew().unwrap().is_empty());
        // B's clock runs far ahead of A's: it still sees the counter move.
        clock_b.advance(59);
    }
    assert!(!claim(&b, "x"));
    assert_eq!(
        a.row("x").unwrap().unwrap().owner.as_deref(),
        Some(a.owner())
    );
}

#[test]
fn a_stale_owner_learns_it_lost_the_lease_and_its_progress_still_counts() {
    let (t, clock) = (table(), Clock::default());
    let a = shipper(&t, &clock);
    let b = shipper(&t, &clock);
    assert!(claim(&a, "x"));
    assert!(!claim(&b, "x"));
    clock.advance(61); // A stalled past the lease time without renewing
    assert!(claim(&b, "x"));
    assert_eq!(a.renew().unwrap(), ["x"], "A is told its lease was taken");
    // Events A's host acknowledged before it stalled are committed, not thrown away.
    a.commit(&[mark("x", 300, None)], 102, Backoff::TRANSIENT)
        .unwrap();
    let row = a.row("x").unwrap().unwrap();
    assert_eq!(row.entry.position, 300);
    assert_eq!(row.owner.as_deref(), Some(b.owner()), "B keeps the lease");
    // Positions never go back.
    b.commit(&[mark("x", 200, None)], 103, Backoff::TRANSIENT)
        .unwrap();
    assert_eq!(b.entry("x").unwrap().unwrap().position, 300);
}

type StepFn = Box<dyn FnOnce() + Send>;
type Steps = Arc<Mutex<Vec<StepFn>>>;

/// A table that lets another shipper's step run between a read and the write after it.
fn racing(inner: &Arc<dyn Table>) -> (Hooked, Steps) {
    let steps: Steps = Arc::default();
    let queued = steps.clone();
    let table = Hooked {
        inner: inner.clone(),
        hook: Box::new(move |_, put| {
            let step = queued.lock().unwrap().pop();
            if let Some(step) = step {
                step();
            }
            put()
        }),
    };
    (table, steps)
}

#[test]
fn two_claims_of_a_new_object_at_once_give_it_to_one_shipper() {
    let (t, clock) = (table(), Clock::default());
    let a = Arc::new(shipper(&t, &clock));
    let (racing, steps) = racing(&t);
    let b = SharedLedger::new(Box::new(racing), "t", LEASE, 3600, Some(clock.monotonic()));
    // B reads no row; before its write lands, A claims the object.
    let a2 = a.clone();
    steps
        .lock()
        .unwrap()
        .push(Box::new(move || assert!(claim(&a2, "x"))));
    assert!(!claim(&b, "x"), "B's write names no row, and finds A's");
    assert!(b.held_elsewhere("x"));
    assert_eq!(
        t.get("x").unwrap().unwrap().owner.as_deref(),
        Some(a.owner())
    );
}

#[test]
fn a_commit_racing_a_takeover_rereads_and_loses_nothing() {
    let (t, clock) = (table(), Clock::default());
    let (racing, steps) = racing(&t);
    let a = SharedLedger::new(Box::new(racing), "t", LEASE, 3600, Some(clock.monotonic()));
    let b = Arc::new(shipper(&t, &clock));
    assert!(claim(&a, "x"));
    assert!(!claim(&b, "x"));
    clock.advance(60);
    // A's commit reads its own copy; B takes the row over before A's write lands.
    let b2 = b.clone();
    steps.lock().unwrap().push(Box::new(move || {
        assert!(claim(&b2, "x"));
        b2.commit(&[mark("x", 10, None)], 101, Backoff::TRANSIENT)
            .unwrap();
    }));
    a.commit(&[mark("x", 25, None)], 102, Backoff::TRANSIENT)
        .unwrap();
    let row = t.get("x").unwrap().unwrap();
    assert_eq!(
        row.entry.position, 25,
        "A's write conflicted, re-read, and raised it"
    );
    assert_eq!(row.owner.as_deref(), Some(b.owner()));
    assert_eq!(row.version, 4, "claim, takeover, B's commit, A's commit");
}

#[test]
fn failures_keep_their_reason_and_retry_puts_them_back_for_anyone() {
    let (t, clock) = (table(), Clock::default());
    let a = shipper(&t, &clock);
    let b = shipper(&t, &clock);
    assert!(claim(&a, "x"));
    a.commit(
        &[mark(
            "x",
            7,
            Some(End::Failed("gzip: invalid header".into())),
        )],
        101,
        Backoff::TRANSIENT,
    )
    .unwrap();
    let row = b.row("x").unwrap().unwrap();
    assert_eq!(row.entry.status, Status::Failed);
    assert_eq!(row.entry.reason, "gzip: invalid header");
    assert_eq!(
        (row.owner, row.expires),
        (None, None),
        "kept until put back"
    );
    assert!(!claim(&b, "x"));
    assert_eq!(b.retry(None, 102).unwrap(), 1);
    assert!(claim(&b, "x"));
    assert_eq!(b.entry("x").unwrap().unwrap().position, 7);
}

#[test]
fn due_offers_released_and_expired_rows_and_skips_live_leases() {
    let (t, clock) = (table(), Clock::default());
    let a = shipper(&t, &clock);
    let b = shipper(&t, &clock);
    for id in ["held", "released", "crashed"] {
        assert!(claim(&a, id));
    }
    a.release("released", "503 SlowDown", Backoff::TRANSIENT, 100)
        .unwrap();
    let none = HashSet::new();
    let ids = |v: Vec<(String, Entry)>| v.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    assert!(
        ids(b.due(104, 10, &none).unwrap()).is_empty(),
        "backing off; leases live"
    );
    assert_eq!(ids(b.due(105, 10, &none).unwrap()), ["released"]);
    clock.advance(30);
    a.renew().unwrap(); // renews "held" and "crashed" alike: A is alive
    a.forget_claims();
    // "crashed": A dies now. B's count for it starts at the next sight.
    assert_eq!(ids(b.due(105, 10, &none).unwrap()), ["released"]);
    clock.advance(60);
    let due = ids(b.due(105, 10, &none).unwrap());
    assert_eq!(
        due,
        ["crashed", "held", "released"],
        "A renewed none of them for 60 s"
    );
}

#[test]
fn the_first_start_is_the_first_shippers() {
    let (t, clock) = (table(), Clock::default());
    assert_eq!(shipper(&t, &clock).first_start_or(500).unwrap(), 500);
    assert_eq!(shipper(&t, &clock).first_start_or(900).unwrap(), 500);
}

#[test]
fn the_holders_commits_keep_its_lease_alive() {
    let (t, clock) = (table(), Clock::default());
    let a = shipper(&t, &clock);
    let b = shipper(&t, &clock);
    assert!(claim(&a, "x"));
    // A commits every few seconds and never calls renew: B must not take the object.
    for p in 1..=30 {
        assert!(
            !claim(&b, "x"),
            "taken at {}s",
            clock.0.load(Ordering::SeqCst)
        );
        clock.advance(5);
        a.commit(&[mark("x", p, None)], 100 + p as u32, Backoff::TRANSIENT)
            .unwrap();
    }
}

#[test]
fn rows_other_shippers_hold_do_not_crowd_a_dead_owners_out_of_due() {
    let (t, clock) = (table(), Clock::default());
    let live = shipper(&t, &clock);
    let dead = shipper(&t, &clock);
    let b = shipper(&t, &clock);
    for i in 0..20 {
        assert!(claim(&live, &format!("a{i:02}")));
    }
    assert!(claim(&dead, "z"));
    dead.forget_claims();
    let none = HashSet::new();
    assert!(
        b.due(105, 1, &none).unwrap().is_empty(),
        "first sight of every lease"
    );
    clock.advance(30);
    live.renew().unwrap();
    clock.advance(30);
    let due: Vec<String> = b
        .due(105, 1, &none)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        due,
        ["z"],
        "the 20 live rows ahead of it are passed over, not counted"
    );
}

#[test]
fn no_claim_after_a_graceful_stop_and_none_twice_here() {
    let (t, clock) = (table(), Clock::default());
    let a = shipper(&t, &clock);
    assert!(claim(&a, "x"));
    assert!(!claim(&a, "x"), "already this shipper's");
    assert_eq!(a.let_go_all(), 0);
    assert!(
        !claim(&a, "y"),
        "stopping: a claim now would outlive the stop"
    );
    assert!(a.row("y").unwrap().is_none());
}

#[test]
fn a_claim_whose_answer_was_lost_is_claimed_again_not_left_to_nobody() {
    let (t, clock) = (table(), Clock::default());
    // The next write lands but answers with an error (a timeout after the write).
    let lose_next = std::sync::atomic::AtomicBool::new(true);
    let lossy = Hooked {
        inner: t.clone(),
        hook: Box::new(move |_, put| {
            let written = put()?;
            if lose_next.swap(false, Ordering::SeqCst) {
                return Err(TableError("timed out".into()));
            }
            Ok(written)
        }),
    };
    let a = SharedLedger::new(Box::new(lossy), "t", LEASE, 3600, Some(clock.monotonic()));
    assert!(
        a.claim(&[claimable("x")], 100, Honour::Redelivery).is_err(),
        "the answer was lost"
    );
    assert_eq!(
        t.get("x").unwrap().unwrap().owner.as_deref(),
        Some(a.owner())
    );
    assert!(
        claim(&a, "x"),
        "the row names this shipper but nothing here holds it"
    );
    assert!(!claim(&a, "x"), "held now: a second claim passes");
}

#[test]
fn a_claim_that_fails_part_way_gives_back_what_it_took() {
    let (t, clock) = (table(), Clock::default());
    // The second write fails before it lands.
    let n = AtomicU64::new(2);
    let failing = Hooked {
        inner: t.clone(),
        hook: Box::new(move |_, put| {
            if n.fetch_sub(1, Ordering::SeqCst) == 1 {
                return Err(TableError("connection reset".into()));
            }
            put()
        }),
    };
    let a = SharedLedger::new(Box::new(failing), "t", LEASE, 3600, Some(clock.monotonic()));
    let err = a
        .claim(&[claimable("x"), claimable("y")], 100, Honour::Redelivery)
        .unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    assert_eq!(t.get("x").unwrap().unwrap().owner, None, "x given back");
    assert!(t.get("y").unwrap().is_none());
    assert!(claim(&a, "x") && claim(&a, "y"), "both claimable again");
}
