use super::*;
pub(super) use crate::ledger::mark::End;

pub(super) fn mark(id: &str, events: u64, position: u64, end: Option<End>) -> Mark {
    Mark {
        id: id.into(),
        events,
        position,
        end,
        ..Mark::default()
    }
}

pub(super) fn claim(l: &Ledger, ids: &[&str], now: u32) -> Vec<String> {
    let objs: Vec<Claimable<'_>> = ids
        .iter()
        .map(|id| Claimable {
            id,
            size: 1,
            modified: (now, 0),
            forget_by: None,
        })
        .collect();
    l.claim(&objs, now, Honour::Backoff)
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn claims_skip_finished_inflight_and_backed_off_objects() {
    let l = Ledger::open(None, None, 0).unwrap();
    assert_eq!(claim(&l, &["a", "b"], 10), ["a", "b"]);
    assert!(claim(&l, &["a"], 10).is_empty(), "claimed once");
    l.commit(&[mark("a", 1, 1, Some(End::Done))], 11, Backoff::TRANSIENT)
        .unwrap();
    assert!(claim(&l, &["a"], 12).is_empty(), "done");
    let wait = l
        .release("b", "503 SlowDown", Backoff::TRANSIENT, 20)
        .unwrap();
    assert_eq!(wait, 5);
    assert!(claim(&l, &["b"], 24).is_empty(), "backing off");
    assert_eq!(claim(&l, &["b"], 25), ["b"]);
    let wait = l
        .release("b", "503 SlowDown", Backoff::TRANSIENT, 25)
        .unwrap();
    assert_eq!(wait, 10, "the backoff grows");
    assert_eq!(Backoff::DENIED.secs(1), 300);
    assert_eq!(Backoff::DENIED.secs(20), 3600);
}

#[test]
fn a_failed_object_keeps_its_position_and_resumes_when_put_back() {
    let l = Ledger::open(None, None, 0).unwrap();
    claim(&l, &["x"], 1);
    l.commit(&[mark("x", 3, 3, None)], 2, Backoff::TRANSIENT)
        .unwrap();
    l.commit(
        &[mark("x", 0, 3, Some(End::Failed("truncated".into())))],
        3,
        Backoff::TRANSIENT,
    )
    .unwrap();
    assert!(claim(&l, &["x"], 4).is_empty());
    assert_eq!(l.retry(None, 5).unwrap(), 1);
    assert_eq!(claim(&l, &["x"], 6), ["x"]);
    assert_eq!(l.progress("x"), 3, "the good prefix is not shipped again");
}
