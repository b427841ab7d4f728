//! Where a scan puts the objects it claimed: collected for the caller, or fed to the
//! workers as each prefix's listing is claimed, so that the first object ships while the
//! scan goes on and a scan of an organisation's month (tens of millions of keys) holds no
//! more than the prefixes listed at once, not every object it found.

use tokio::sync::mpsc;

use crate::object::ObjectRef;

/// A scan's output.
pub enum Sink<'a> {
    /// Every object, kept for the caller (tests, benches).
    Collect(Vec<ObjectRef>),
    /// Each object sent on as it is claimed; waits while the workers are busy.
    Feed {
        to: &'a mpsc::Sender<ObjectRef>,
        sent: usize,
        /// The workers are gone (the engine is stopping): the rest is not sent.
        closed: bool,
    },
}

impl<'a> Sink<'a> {
    pub fn feed(to: &'a mpsc::Sender<ObjectRef>) -> Self {
        Sink::Feed {
            to,
            sent: 0,
            closed: false,
        }
    }

    /// Puts `objects` out. Objects not sent once the workers are gone stay claimed and in
    /// flight here, and are let go as the engine stops, as before.
    pub async fn put(&mut self, objects: Vec<ObjectRef>) {
        match self {
            Sink::Collect(all) => all.extend(objects),
            Sink::Feed { to, sent, closed } => {
                for o in objects {
                    if *closed {
                        return;
                    }
                    match to.send(o).await {
                        Ok(()) => *sent += 1,
                        Err(_) => *closed = true,
                    }
                }
            }
        }
    }

    /// How many objects were put out.
    pub fn count(&self) -> usize {
        match self {
            Sink::Collect(all) => all.len(),
            Sink::Feed { sent, .. } => *sent,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self, Sink::Feed { closed: true, .. })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::discover::DiscoverError;
    use crate::discover::bucket::BucketScan;
    use crate::discover::listing::{Clock, Listed, Lister};
    use crate::ledger::Ledger;
    use crate::log::{Logger, tests_support::Lines};
    use crate::pathexpr::PathExpression;
    use crate::select::Selection;
    use crate::timestamp::EventTime;

    const PREFIXES: usize = 20;
    const NOW: i64 = 1_689_000_000;

    /// One account, `PREFIXES` regions, one object each; counts object listings.
    struct Regions {
        bucket: Arc<str>,
        listings: Arc<AtomicUsize>,
    }

    fn region(i: usize) -> String {
        format!("AWSLogs/111122223333/CloudTrail/us-east-{}/", i + 1)
    }

    impl Lister for Regions {
        fn bucket(&self) -> &Arc<str> {
            &self.bucket
        }

        async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, DiscoverError> {
            Ok(match prefix {
                "" => vec!["AWSLogs/".into()],
                "AWSLogs/" => vec!["AWSLogs/111122223333/".into()],
                "AWSLogs/111122223333/CloudTrail/" => (0..PREFIXES).map(region).collect(),
                _ => Vec::new(),
            })
        }

        async fn list_objects(
            &self,
            prefix: &str,
            _: Option<&str>,
        ) -> Result<Vec<Listed>, DiscoverError> {
            self.listings.fetch_add(1, Ordering::SeqCst);
            Ok(vec![Listed {
                key: format!(
                    "{prefix}2023/07/10/111122223333_CloudTrail_x_20230710T0000Z_a.json.gz"
                ),
                size: 10,
                last_modified: EventTime::new(NOW - 3600, 0).unwrap(),
            }])
        }
    }

    struct Fixed;

    impl Clock for Fixed {
        fn now(&self) -> EventTime {
            EventTime::new(NOW, 0).unwrap()
        }
    }

    /// The workers get the first prefix's object before the other prefixes are listed: a
    /// fed scan waits for them rather than gathering everything first.
    #[test]
    fn a_fed_scan_hands_over_each_prefix_before_listing_the_next() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listings = Arc::new(AtomicUsize::new(0));
        let mut scan = BucketScan::new(
            Regions {
                bucket: "b".into(),
                listings: listings.clone(),
            },
            Fixed,
            Selection::events(PathExpression::new("*AWSLogs/*/CloudTrail/*").unwrap()),
            EventTime::new(NOW - 30 * 86_400, 0).unwrap(),
            2 * 86_400,
            Logger::new(Arc::new(Lines::default())),
        );
        let ledger = Ledger::open(None, None, 0).unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let seen = listings.clone();
        let got = rt.block_on(async move {
            let consumer = tokio::spawn(async move {
                let mut at_each = Vec::new();
                while rx.recv().await.is_some() {
                    at_each.push(seen.load(Ordering::SeqCst));
                }
                at_each
            });
            let mut sink = Sink::feed(&tx);
            scan.scan_into(&ledger, &mut sink).await;
            assert_eq!(sink.count(), PREFIXES);
            drop(sink);
            drop(tx);
            consumer.await.unwrap()
        });
        assert_eq!(got.len(), PREFIXES);
        assert!(
            got[0] <= 2,
            "the first object reached the workers after {} of {PREFIXES} listings",
            got[0]
        );
    }
}
