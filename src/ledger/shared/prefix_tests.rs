//! Shippers splitting a bucket's listed prefixes on one table, their steps ordered by hand.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::tests::{Clock, LEASE, shipper};
use super::*;
use crate::ledger::mark::End;

fn lister(table: &Arc<dyn Table>, clock: &Clock) -> SharedLedger {
    shipper(table, clock).listing("b")
}

fn prefixes(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("s3://b/AWSLogs/11112222333{i}/CloudTrail/us-east-1/"))
        .collect()
}

fn share(l: &SharedLedger, known: &[String]) -> Vec<String> {
    l.share_prefixes(known, &|_| true).unwrap()
}

fn disjoint_cover(parts: &[&[String]], all: &[String]) {
    let mut union: Vec<String> = parts.iter().flat_map(|p| p.iter().cloned()).collect();
    union.sort();
    let mut want = all.to_vec();
    want.sort();
    assert_eq!(
        union, want,
        "every prefix listed by exactly one shipper: {parts:?}"
    );
}

#[test]
fn two_shippers_split_the_prefixes_and_a_third_takes_its_share() {
    let (t, clock): (Arc<dyn Table>, _) = (Arc::new(MemTable::default()), Clock::default());
    let all = prefixes(6);
    let a = lister(&t, &clock);
    assert_eq!(share(&a, &all), all, "alone, A lists everything");
    let b = lister(&t, &clock);
    let b1 = share(&b, &all);
    assert_eq!(b1.len(), 3, "B takes its half from A: {b1:?}");
    let a1 = share(&a, &all);
    disjoint_cover(&[&a1, &b1], &all);
    // Steady: nobody takes anything more.
    let taken = b.counts.prefixes_taken.load(Ordering::Relaxed)
        + a.counts.prefixes_taken.load(Ordering::Relaxed);
    for _ in 0..3 {
        clock.advance(10);
        a.renew().unwrap();
        b.renew().unwrap();
        assert_eq!(share(&a, &all), a1);
        assert_eq!(share(&b, &all), b1);
    }
    assert_eq!(
        b.counts.prefixes_taken.load(Ordering::Relaxed)
            + a.counts.prefixes_taken.load(Ordering::Relaxed),
        taken
    );
    let c = lister(&t, &clock);
    let c1 = share(&c, &all);
    assert_eq!(c1.len(), 2, "{c1:?}");
    let (a2, b2) = (share(&a, &all), share(&b, &all));
    disjoint_cover(&[&a2, &b2, &c1], &all);
}

#[test]
fn a_stopped_shippers_prefixes_move_at_once_and_a_dead_ones_after_the_lease_time() {
    let (t, clock): (Arc<dyn Table>, _) = (Arc::new(MemTable::default()), Clock::default());
    let all = prefixes(4);
    let a = lister(&t, &clock);
    let b = lister(&t, &clock);
    share(&a, &all);
    let b1 = share(&b, &all);
    share(&a, &all);
    assert_eq!(b1.len(), 2);
    assert_eq!(b.let_go_all(), 0);
    assert_eq!(
        share(&a, &all),
        all,
        "B stopped: A lists its prefixes at once"
    );

    // C joins and takes half; then C dies (no heartbeat, no stop).
    let c = lister(&t, &clock);
    let c1 = share(&c, &all);
    assert_eq!(c1.len(), 2);
    let a1 = share(&a, &all);
    assert_eq!(a1.len(), 2);
    for _ in 0..5 {
        clock.advance(10);
        a.renew().unwrap();
        assert_eq!(share(&a, &all), a1, "C's lease is still live");
    }
    clock.advance(11);
    a.renew().unwrap();
    assert_eq!(
        share(&a, &all),
        all,
        "C's heartbeat stood still a lease time"
    );
}

/// Claims and finishes one object; whether the claim took it.
fn ship(l: &SharedLedger, id: &str) -> bool {
    let o = Claimable {
        id,
        size: 1,
        modified: (1, 0),
        forget_by: None,
    };
    let taken = !l.claim(&[o], 100, Honour::Backoff).unwrap().is_empty();
    let mark = Mark {
        id: id.into(),
        events: 5,
        position: 5,
        end: Some(End::Done),
        ..Mark::default()
    };
    l.commit(&[mark], 101, Backoff::TRANSIENT).unwrap();
    taken
}

#[test]
fn a_paused_shippers_prefixes_move_after_the_lease_time_and_come_back() {
    let (t, clock): (Arc<dyn Table>, _) = (Arc::new(MemTable::default()), Clock::default());
    let all = prefixes(4);
    let a = lister(&t, &clock);
    let b = lister(&t, &clock);
    share(&a, &all);
    share(&b, &all);
    let a1 = share(&a, &all);
    assert_eq!(a1.len(), 2);
    // B's host pauses the input: B's scans stop, and so does its heartbeat.
    b.set_paused(true);
    for _ in 0..6 {
        clock.advance(11);
        a.renew().unwrap();
        b.renew().unwrap();
        share(&a, &all);
    }
    assert_eq!(
        share(&a, &all),
        all,
        "B's heartbeat stood still a lease time"
    );
    b.set_paused(false);
    b.renew().unwrap();
    assert_eq!(share(&b, &all).len(), 2, "B takes its share back");
    let a2 = share(&a, &all);
    assert_eq!(a2.len(), 2);
}

#[test]
fn the_watermark_is_shared_and_the_forget_line_expires_done_rows_below_it() {
    let (t, clock): (Arc<dyn Table>, _) = (Arc::new(MemTable::default()), Clock::default());
    let p = &prefixes(1)[0];
    let a = lister(&t, &clock);
    share(&a, std::slice::from_ref(p));
    a.warm(p, p).unwrap();
    let old = format!("{p}2023/07/09/x.json.gz");
    let new = format!("{p}2023/07/11/y.json.gz");
    for id in [&old, &new] {
        assert!(ship(&a, id));
        let row = a.row(id).unwrap().unwrap();
        assert_eq!(row.expires, None, "a listing forgets it, not time");
        assert!(a.known_done(id));
    }
    // A done object under a prefix not listed here is not kept (nothing would prune it).
    let elsewhere = "s3://b/AWSLogs/999999999999/CloudTrail/us-east-1/2023/07/09/z.json.gz";
    assert!(ship(&a, elsewhere));
    assert!(!a.known_done(elsewhere));

    a.advance_prefix(p, &new, &format!("{p}2023/07/10"), 200)
        .unwrap();
    let b = lister(&t, &clock);
    assert_eq!(
        b.prefix_marks(p).unwrap(),
        (Some(new.clone()), Some(format!("{p}2023/07/10")))
    );
    let expires = |id: &str| a.row(id).unwrap().unwrap().expires;
    assert_eq!(
        expires(&old),
        Some(200 + 86_400),
        "below the forget line: a day later"
    );
    assert_eq!(expires(&new), None);
    assert!(!a.known_done(&old) && a.known_done(&new));
    // Never lowered.
    b.advance_prefix(p, &old, &format!("{p}2023/07/01"), 300)
        .unwrap();
    assert_eq!(a.watermarks().unwrap(), vec![(p.clone(), new.clone())]);

    // B warms the prefix from the listing's start: one query, then no read for the done key.
    b.warm(p, &format!("{p}2023/07/09")).unwrap();
    let reads = b.counts.reads.load(Ordering::Relaxed);
    assert!(!b.holds_watermark(&new).unwrap());
    let o = Claimable {
        id: &new,
        size: 1,
        modified: (1, 0),
        forget_by: None,
    };
    let taken = b.claim(&[o], 400, Honour::Backoff).unwrap();
    assert!(taken.is_empty(), "done: not taken again");
    assert_eq!(b.counts.reads.load(Ordering::Relaxed), reads, "no row read");
}

#[test]
fn without_listing_done_rows_expire_by_time() {
    let (t, clock): (Arc<dyn Table>, _) = (Arc::new(MemTable::default()), Clock::default());
    let a = SharedLedger::new(
        Box::new(t.clone()),
        "t",
        LEASE,
        3600,
        Some(clock.monotonic()),
    );
    let id = "s3://b/AWSLogs/111122223333/CloudTrail/us-east-1/2023/07/09/x.json.gz";
    assert!(ship(&a, id));
    assert_eq!(a.row(id).unwrap().unwrap().expires, Some(101 + 3600));
    assert!(!a.known_done(id));
}

/// A small seeded generator (xorshift), so a failing seed replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One seed: shippers join, stop gracefully and die while the clock moves; each live one
/// renews and shares every step (as its lease loop and scans do). Once nobody has joined,
/// stopped or died for two lease times, every prefix is listed by exactly one live shipper
/// and the shares are within one of each other. Returns what broke, if anything.
fn split_run(seed: u64) -> Result<(), String> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let t: Arc<dyn Table> = Arc::new(MemTable::default());
    let clock = Clock::default();
    let all = prefixes(1 + rng.below(12) as usize);
    let mut live: Vec<SharedLedger> = vec![lister(&t, &clock)];
    let mut quiet_since = 0u64;
    let mut now = 0u64;
    for step in 0..400 {
        if live.len() < 5 && rng.below(40) == 0 {
            live.push(lister(&t, &clock));
            quiet_since = now;
        } else if live.len() > 1 && rng.below(60) == 0 {
            let gone = live.remove(rng.below(live.len() as u64) as usize);
            if rng.below(2) == 0 {
                gone.let_go_all();
            }
            quiet_since = now;
        }
        let dt = 1 + rng.below(10);
        clock.advance(dt);
        now += dt;
        let mut held = Vec::new();
        for l in &live {
            l.renew().map_err(|e| e.to_string())?;
            held.push(
                l.share_prefixes(&all, &|_| true)
                    .map_err(|e| e.to_string())?,
            );
        }
        if now - quiet_since < 2 * LEASE.as_secs() + 20 {
            continue;
        }
        let mut union: Vec<&String> = held.iter().flatten().collect();
        union.sort();
        let mut want: Vec<&String> = all.iter().collect();
        want.sort();
        if union != want {
            return Err(format!(
                "step {step}: held {held:?}, want each of {all:?} once"
            ));
        }
        let sizes: Vec<usize> = held.iter().map(Vec::len).collect();
        let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        if hi - lo > 1 {
            return Err(format!("step {step}: shares {sizes:?}"));
        }
    }
    Ok(())
}

#[test]
fn seeded_joins_stops_and_deaths_settle_on_one_lister_per_prefix() {
    let seeds = std::env::var("PREFIX_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100u64);
    for seed in 0..seeds {
        if let Err(e) = split_run(seed) {
            panic!("seed {seed}: {e}");
        }
    }
}
