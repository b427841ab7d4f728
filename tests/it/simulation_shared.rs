//! A seeded simulation of several shippers sharing one ledger table (`ledger.dynamodb_table`)
//! and one SQS queue (`docs/delivery.md`, "Many shippers, one ledger").
//!
//! The real `SharedLedger` rules run over one in-memory `Table` (each call atomic, as a
//! DynamoDB request is); the queue, the shippers' hosts and their clocks are modelled here.
//! Each seed draws two to four shippers whose clocks run at 0.8 to 1.25 times real time,
//! thirty objects of 1 to 60 events announced over time (some twice, as SQS may), and a
//! schedule of receives, deliveries, commits, renewals, requeues, graceful stops and crashes
//! (a crash keeps nothing: the shipper comes back with a new owner id, its messages stay
//! invisible until their visibility timeout). A shipper that receives a message for an
//! object another shipper holds deletes it, as the engine does: the table answers for the
//! object from then on. After a calm, the promises are checked:
//!
//! * every object is done in the table, and every event arrived at least once;
//! * an event repeats only after a crash that came while it was delivered and not
//!   committed, at most once per such crash: never after a graceful stop, and never because
//!   two live shippers held one object;
//! * no live shipper ever loses a lease it kept renewing, whatever the clocks' rates.
//!
//! [`planted_bugs_are_caught_with_several_shippers`] proves the checks can fail: no requeue
//! (an object whose message was deleted and whose holder crashed is never finished), and a
//! lease time of zero (two live shippers ship one object).
//!
//! `SIM_SHARED_SEEDS=n` runs n seeds (default 1,000); `SIM_SHARED_SEED=s` replays one.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cloudtrail_s3::engine::handoff::{End, Mark};
use cloudtrail_s3::ledger::shared::{Hooked, MemTable, Monotonic, SharedLedger, Table, TableError};
use cloudtrail_s3::ledger::{Backoff, Claimable, Honour, Status};

use crate::simulation::rng::Rng;

const LEASE: Duration = Duration::from_secs(10);
const VISIBILITY_MS: u64 = 30_000;
const OBJECTS: usize = 30;
/// Wall-clock seconds at the start (claims and backoffs are judged in wall seconds).
const BASE: u32 = 1_700_000_000;

/// A planted bug, to show the checks catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    None,
    /// Shippers never look at the table's open rows.
    NoRequeue,
    /// A lease expires as soon as another shipper has seen it twice.
    ZeroLease,
}

struct Message {
    object: usize,
    visible_at: u64,
    /// Bumped by each receive: only the latest receiver can delete it.
    receipt: u64,
}

struct Flight {
    object: usize,
    delivered: u64,
    committed: u64,
    /// The message this flight came from (index, receipt), if any.
    message: Option<(usize, u64)>,
}

struct Shipper {
    ledger: Option<SharedLedger>,
    rate: u64,
    flights: Vec<Flight>,
    down_until: u64,
    last_renew: u64,
    last_requeue: u64,
}

struct World {
    rng: Rng,
    bug: Bug,
    t: Arc<AtomicU64>,
    table: Arc<MemTable>,
    /// Half the seeds lose or fail 1.5% of writes; the other half none.
    lossy: Arc<dyn Table>,
    /// Whether this seed's table loses writes.
    loses: bool,
    events: Vec<u64>,
    messages: Vec<Option<Message>>,
    /// Messages not yet sent: (time, object).
    to_send: Vec<(u64, usize)>,
    deliveries: Vec<Vec<u32>>,
    allowance: Vec<Vec<u32>>,
    shippers: Vec<Shipper>,
    lost_leases: usize,
    log: Vec<String>,
    stats: Stats,
}

/// What a schedule did, summed over seeds and printed, so a run that exercised nothing shows.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    crashes: u64,
    stops: u64,
    takeovers: u64,
    deleted_held_elsewhere: u64,
    repeated: u64,
    events: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.crashes += o.crashes;
        self.stops += o.stops;
        self.takeovers += o.takeovers;
        self.deleted_held_elsewhere += o.deleted_held_elsewhere;
        self.repeated += o.repeated;
        self.events += o.events;
    }
}

/// The shared table as a network shows it: on a losing seed, 10 writes in a thousand land
/// with their answer lost (a timeout) and 5 fail before they land. Reads always answer.
fn lossy(table: &Arc<MemTable>, seed: u64, loses: bool) -> Hooked {
    let draws = std::sync::Mutex::new(Rng::seeded(seed));
    Hooked {
        inner: table.clone(),
        hook: Box::new(move |_, put| {
            if !loses {
                return put();
            }
            let d = draws.lock().unwrap().below(1000);
            if d < 5 {
                return Err(TableError("connection reset".into()));
            }
            let written = put()?;
            if d < 15 {
                return Err(TableError("timed out after the write".into()));
            }
            Ok(written)
        }),
    }
}

fn id(object: usize) -> String {
    format!("s3://b/AWSLogs/111122223333/CloudTrail/us-east-1/2023/07/10/o{object:03}.json.gz")
}

impl World {
    fn new(seed: u64, bug: Bug) -> World {
        let mut rng = Rng::seeded(seed);
        let events: Vec<u64> = (0..OBJECTS).map(|_| 1 + rng.below(60)).collect();
        let mut to_send = Vec::new();
        for o in 0..OBJECTS {
            // Some land after the schedule's storms, in the calm (about 465 s in).
            let at = rng.below(600_000);
            to_send.push((at, o));
            if rng.chance(100) {
                to_send.push((at + rng.below(60_000), o));
            }
        }
        to_send.sort();
        let n = 1 + rng.below(4) as usize;
        let table = Arc::new(MemTable::default());
        let loses = rng.chance(500);
        let lossy: Arc<dyn Table> = Arc::new(lossy(&table, seed, loses));
        let mut w = World {
            rng,
            bug,
            t: Arc::new(AtomicU64::new(0)),
            table,
            lossy,
            loses,
            deliveries: events.iter().map(|&e| vec![0; e as usize]).collect(),
            allowance: events.iter().map(|&e| vec![0; e as usize]).collect(),
            events,
            messages: Vec::new(),
            to_send,
            shippers: Vec::new(),
            lost_leases: 0,
            log: Vec::new(),
            stats: Stats::default(),
        };
        for _ in 0..n {
            let rate = 800 + w.rng.below(451);
            w.shippers.push(Shipper {
                ledger: None,
                rate,
                flights: Vec::new(),
                down_until: 0,
                last_renew: 0,
                last_requeue: 0,
            });
        }
        w
    }

    fn now(&self) -> u64 {
        self.t.load(Ordering::SeqCst)
    }

    fn wall(&self) -> u32 {
        BASE + (self.now() / 1000) as u32
    }

    fn ledger_for(&self, rate: u64) -> SharedLedger {
        let t = self.t.clone();
        let clock: Monotonic =
            Arc::new(move || Duration::from_millis(t.load(Ordering::SeqCst) * rate / 1000));
        let lease = if self.bug == Bug::ZeroLease {
            Duration::ZERO
        } else {
            LEASE
        };
        let table: Arc<dyn Table> = self.lossy.clone();
        SharedLedger::new(Box::new(table), "sim", lease, 3600, Some(clock))
    }

    /// One step: time moves, messages are sent, each shipper acts.
    fn step(&mut self, calm: bool) {
        let dt = 50 + self.rng.below(1450);
        self.t.fetch_add(dt, Ordering::SeqCst);
        let now = self.now();
        while let Some(&(at, o)) = self.to_send.first() {
            if at > now {
                break;
            }
            self.to_send.remove(0);
            self.messages.push(Some(Message {
                object: o,
                visible_at: at,
                receipt: 0,
            }));
        }
        let order: Vec<usize> = {
            let mut v: Vec<usize> = (0..self.shippers.len()).collect();
            for i in (1..v.len()).rev() {
                let j = self.rng.below(i as u64 + 1) as usize;
                v.swap(i, j);
            }
            v
        };
        for s in order {
            self.act(s, calm);
        }
    }

    fn act(&mut self, s: usize, calm: bool) {
        let now = self.now();
        if self.shippers[s].ledger.is_none() {
            if now >= self.shippers[s].down_until {
                let l = self.ledger_for(self.shippers[s].rate);
                let sh = &mut self.shippers[s];
                sh.ledger = Some(l);
                sh.last_renew = now * sh.rate / 1000;
                sh.last_requeue = sh.last_renew;
                self.log.push(format!("{now}: shipper {s} starts"));
            }
            return;
        }
        if !calm && self.rng.chance(8) {
            return self.crash(s);
        }
        if !calm && self.rng.chance(8) {
            return self.stop(s);
        }
        self.heartbeat(s);
        if self.shippers[s].flights.len() < 3 && self.rng.chance(600) {
            self.receive(s);
        }
        let own = |w: &World| w.now() * w.shippers[s].rate / 1000;
        if self.bug != Bug::NoRequeue
            && own(self).saturating_sub(self.shippers[s].last_requeue)
                >= (LEASE.as_millis() as u64 / 2).max(2000)
        {
            self.shippers[s].last_requeue = own(self);
            self.requeue(s);
        }
        self.work(s);
        if self.rng.chance(500) {
            self.commit(s);
        }
        let every = self.shippers[s]
            .ledger
            .as_ref()
            .unwrap()
            .renew_every()
            .as_millis() as u64;
        if own(self).saturating_sub(self.shippers[s].last_renew) >= every {
            self.shippers[s].last_renew = own(self);
            // A failed renewal is logged by the engine and tried again at the next tick.
            let lost = self.shippers[s]
                .ledger
                .as_ref()
                .unwrap()
                .renew()
                .unwrap_or_default();
            if !lost.is_empty() {
                self.log
                    .push(format!("{now}: shipper {s} lost leases {lost:?}"));
                if !self.loses {
                    self.lost_leases += lost.len();
                } else {
                    // Renewals that failed twice in a row: the engine warns and keeps
                    // shipping, and so does the shipper that took the object over.
                    for f in &self.shippers[s].flights {
                        if lost.contains(&id(f.object)) {
                            for e in f.committed..self.events[f.object] {
                                self.allowance[f.object][e as usize] += 1;
                            }
                        }
                    }
                }
            }
        }
    }

    fn heartbeat(&mut self, s: usize) {
        let now = self.now();
        for f in &self.shippers[s].flights {
            if let Some((m, receipt)) = f.message
                && let Some(msg) = self.messages[m].as_mut()
                && msg.receipt == receipt
            {
                msg.visible_at = now + VISIBILITY_MS;
            }
        }
    }

    fn start_flight(&mut self, s: usize, object: usize, message: Option<(usize, u64)>) {
        let ledger = self.shippers[s].ledger.as_ref().unwrap();
        let position = ledger.entry(&id(object)).unwrap().map_or(0, |e| e.position);
        self.shippers[s].flights.push(Flight {
            object,
            delivered: position,
            committed: position,
            message,
        });
    }

    fn claim(&self, s: usize, object: usize, honour: Honour) -> bool {
        let ledger = self.shippers[s].ledger.as_ref().unwrap();
        if self.shippers[s].flights.iter().any(|f| f.object == object) {
            return false;
        }
        let id = id(object);
        let c = Claimable {
            id: &id,
            size: self.events[object],
            modified: (BASE, 0),
            forget_by: None,
        };
        // An error claims nothing (the message goes back, the requeue looks again).
        ledger
            .claim(&[c], self.wall(), honour)
            .is_ok_and(|claimed| !claimed.is_empty())
    }

    fn receive(&mut self, s: usize) {
        let now = self.now();
        let visible: Vec<usize> = self
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.as_ref().is_some_and(|m| m.visible_at <= now))
            .map(|(i, _)| i)
            .collect();
        if visible.is_empty() {
            return;
        }
        let m = visible[self.rng.below(visible.len() as u64) as usize];
        let msg = self.messages[m].as_mut().unwrap();
        msg.receipt += 1;
        msg.visible_at = now + VISIBILITY_MS;
        let (object, receipt) = (msg.object, msg.receipt);
        if self.shippers[s].flights.iter().any(|f| f.object == object) {
            // Already shipping it here: the message waits with it (hand back for later).
            self.messages[m].as_mut().unwrap().visible_at = now + 5_000;
            return;
        }
        if self.claim(s, object, Honour::Redelivery) {
            self.log.push(format!(
                "{now}: shipper {s} claims o{object} from message {m}"
            ));
            self.start_flight(s, object, Some((m, receipt)));
            return;
        }
        let ledger = self.shippers[s].ledger.as_ref().unwrap();
        let finished = ledger
            .entry(&id(object))
            .unwrap()
            .is_some_and(|e| e.is_finished());
        if finished || ledger.held_elsewhere(&id(object)) {
            // Done, or another shipper's: the table answers for it.
            self.stats.deleted_held_elsewhere += u64::from(!finished);
            self.log.push(format!(
                "{now}: shipper {s} deletes message {m} (o{object} {})",
                if finished { "done" } else { "held elsewhere" }
            ));
            self.messages[m] = None;
        } else {
            self.messages[m].as_mut().unwrap().visible_at = now + 5_000;
        }
    }

    fn requeue(&mut self, s: usize) {
        let now = self.now();
        let inflight: HashSet<Arc<str>> = self.shippers[s]
            .flights
            .iter()
            .map(|f| Arc::<str>::from(id(f.object)))
            .collect();
        let due = self.shippers[s]
            .ledger
            .as_ref()
            .unwrap()
            .due(self.wall(), 10, &inflight)
            .unwrap();
        for (row, _) in due {
            let object: usize = row[row.len() - 11..row.len() - 8].parse().unwrap();
            if self.claim(s, object, Honour::Backoff) {
                self.stats.takeovers += 1;
                self.log.push(format!(
                    "{now}: shipper {s} takes o{object} over from the table"
                ));
                self.start_flight(s, object, None);
            }
        }
    }

    fn work(&mut self, s: usize) {
        for i in 0..self.shippers[s].flights.len() {
            let k = self.rng.below(11);
            let f = &mut self.shippers[s].flights[i];
            let end = (f.delivered + k).min(self.events[f.object]);
            for e in f.delivered..end {
                self.deliveries[f.object][e as usize] += 1;
            }
            f.delivered = end;
        }
    }

    /// Commits what the host has: everything delivered (at a graceful stop the host drains
    /// and the last commit covers it all).
    fn commit(&mut self, s: usize) {
        let now = self.now();
        let wall = self.wall();
        let mut marks = Vec::new();
        for f in &self.shippers[s].flights {
            let done = f.delivered == self.events[f.object];
            if f.delivered > f.committed || done {
                marks.push(Mark {
                    id: id(f.object).into(),
                    events: f.delivered - f.committed,
                    position: f.delivered,
                    end: done.then_some(End::Done),
                    ..Mark::default()
                });
            }
        }
        if marks.is_empty() {
            return;
        }
        let committed =
            self.shippers[s]
                .ledger
                .as_ref()
                .unwrap()
                .commit(&marks, wall, Backoff::TRANSIENT);
        if committed.is_err() {
            // As the engine does: the finished objects are let go, to be found again and
            // shipped again from the last position the table has (a repeat, never a loss);
            // the others keep their lease, and their next commit carries the position on.
            self.log.push(format!(
                "{now}: shipper {s} commit failed; lets its finished objects go"
            ));
            let events = &self.events;
            let (ended, going): (Vec<Flight>, Vec<Flight>) =
                std::mem::take(&mut self.shippers[s].flights)
                    .into_iter()
                    .partition(|f| f.delivered == events[f.object]);
            self.shippers[s].flights = going;
            for f in ended {
                for e in f.committed..f.delivered {
                    self.allowance[f.object][e as usize] += 1;
                }
                let _ = self.shippers[s]
                    .ledger
                    .as_ref()
                    .unwrap()
                    .let_go(&id(f.object));
                if let Some((m, receipt)) = f.message
                    && let Some(msg) = self.messages[m].as_mut()
                    && msg.receipt == receipt
                {
                    msg.visible_at = now + 10_000;
                }
            }
            return;
        }
        let events = &self.events;
        let mut finished = Vec::new();
        self.shippers[s].flights.retain_mut(|f| {
            f.committed = f.delivered;
            if f.delivered == events[f.object] {
                finished.push((f.object, f.message));
                false
            } else {
                true
            }
        });
        for (object, message) in finished {
            self.log
                .push(format!("{now}: shipper {s} finished o{object}"));
            if let Some((m, receipt)) = message
                && self.messages[m]
                    .as_ref()
                    .is_some_and(|x| x.receipt == receipt)
            {
                self.messages[m] = None;
            }
        }
    }

    fn crash(&mut self, s: usize) {
        let now = self.now();
        self.log.push(format!("{now}: shipper {s} crashes"));
        self.stats.crashes += 1;
        for f in &self.shippers[s].flights {
            for e in f.committed..f.delivered {
                self.allowance[f.object][e as usize] += 1;
            }
        }
        let sh = &mut self.shippers[s];
        if let Some(l) = sh.ledger.take() {
            l.forget_claims();
        }
        sh.flights.clear();
        sh.down_until = now + self.rng.below(20_000);
    }

    fn stop(&mut self, s: usize) {
        let now = self.now();
        self.log.push(format!("{now}: shipper {s} stops"));
        self.stats.stops += 1;
        self.commit(s);
        // Leases not given up (a write failed) expire by the lease time instead.
        let ledger = self.shippers[s].ledger.take().unwrap();
        ledger.let_go_all();
        for f in std::mem::take(&mut self.shippers[s].flights) {
            // Left uncommitted only when the stop's commit failed: a repeat, as the engine
            // logs it.
            for e in f.committed..f.delivered {
                self.allowance[f.object][e as usize] += 1;
            }
            if let Some((m, receipt)) = f.message
                && let Some(msg) = self.messages[m].as_mut()
                && msg.receipt == receipt
            {
                msg.visible_at = now;
            }
        }
        self.shippers[s].down_until = now + self.rng.below(20_000);
    }

    fn settled(&self) -> bool {
        self.to_send.is_empty()
            && self.messages.iter().all(Option::is_none)
            && (0..OBJECTS).all(|o| {
                self.table
                    .get(&id(o))
                    .unwrap()
                    .is_some_and(|r| r.entry.status == Status::Done)
            })
    }

    /// Runs the schedule; `Err` says which promise broke.
    fn run(&mut self) -> Result<(), String> {
        for _ in 0..600 {
            self.step(false);
        }
        let mut calm_steps = 0;
        while !self.settled() {
            self.step(true);
            calm_steps += 1;
            if calm_steps > 4_000 {
                let open: Vec<usize> = (0..OBJECTS)
                    .filter(|&o| {
                        !self
                            .table
                            .get(&id(o))
                            .unwrap()
                            .is_some_and(|r| r.entry.status == Status::Done)
                    })
                    .collect();
                return Err(format!("lost: objects {open:?} never finished"));
            }
        }
        if self.lost_leases > 0 {
            return Err(format!("{} leases lost by live shippers", self.lost_leases));
        }
        for o in 0..OBJECTS {
            for e in 0..self.events[o] as usize {
                let (got, allowed) = (self.deliveries[o][e], 1 + self.allowance[o][e]);
                self.stats.events += 1;
                self.stats.repeated += u64::from(got.saturating_sub(1));
                if got == 0 {
                    return Err(format!("lost: o{o} event {e} never arrived"));
                }
                if got > allowed {
                    return Err(format!(
                        "repeated: o{o} event {e} arrived {got} times, {allowed} allowed"
                    ));
                }
            }
        }
        Ok(())
    }
}

fn seeds(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn several_shippers_on_one_table_keep_the_delivery_promises() {
    if let Some(seed) = std::env::var("SIM_SHARED_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let mut w = World::new(seed, Bug::None);
        let result = w.run();
        for line in &w.log {
            eprintln!("{line}");
        }
        result.unwrap();
        return;
    }
    let n = seeds("SIM_SHARED_SEEDS", 1_000);
    let mut total = Stats::default();
    let failures: Vec<String> = (0..n)
        .filter_map(|seed| {
            let mut w = World::new(seed, Bug::None);
            let result = w.run();
            total += w.stats;
            result.err().map(|e| format!("seed {seed}: {e}"))
        })
        .take(5)
        .collect();
    eprintln!("shared-ledger simulation, {n} seeds: {total:?}");
    assert!(
        total.crashes > 0
            && total.stops > 0
            && total.takeovers > 0
            && total.deleted_held_elsewhere > 0,
        "the schedules never crashed or stopped a shipper, took an object over, or deleted a message for an object held elsewhere: {total:?}"
    );
    assert!(
        failures.is_empty(),
        "{} (replay with SIM_SHARED_SEED=…)",
        failures.join("\n")
    );
}

#[test]
fn planted_bugs_are_caught_with_several_shippers() {
    for (bug, what) in [(Bug::NoRequeue, "lost:"), (Bug::ZeroLease, "repeated:")] {
        let caught = (0..200).find_map(|seed| {
            World::new(seed, bug)
                .run()
                .err()
                .filter(|e| e.starts_with(what))
                .map(|e| (seed, e))
        });
        let (seed, e) = caught.unwrap_or_else(|| panic!("{bug:?} was not caught as {what}"));
        eprintln!("{bug:?}: seed {seed}: {e}");
    }
}
