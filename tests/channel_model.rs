//! Random sequences of non-blocking operations checked against a VecDeque
//! model, for the unbounded and bounded flavours.

use std::collections::VecDeque;

use proptest::prelude::*;
use smarm::{bounded, channel, TryRecvError, TrySendError};

#[derive(Debug, Clone)]
enum Op {
    Send(u32),
    Recv,
    DropSender,
    DropReceiver,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<u32>().prop_map(Op::Send),
        6 => Just(Op::Recv),
        1 => Just(Op::DropSender),
        1 => Just(Op::DropReceiver),
    ]
}

fn check(cap: Option<usize>, ops: Vec<Op>) {
    let (tx, rx) = match cap {
        None => channel(),
        Some(c) => bounded(c),
    };
    let mut tx = Some(tx);
    let mut rx = Some(rx);
    let mut model = VecDeque::new();
    for op in ops {
        match op {
            Op::Send(v) => {
                let Some(t) = &tx else { continue };
                let r = t.try_send(v);
                if rx.is_none() {
                    assert_eq!(r, Err(TrySendError::Disconnected(v)));
                } else if cap.is_some_and(|c| model.len() == c) {
                    assert_eq!(r, Err(TrySendError::Full(v)));
                } else {
                    assert_eq!(r, Ok(()));
                    model.push_back(v);
                }
            }
            Op::Recv => {
                let Some(r) = &rx else { continue };
                let got = r.try_recv();
                match model.pop_front() {
                    Some(v) => assert_eq!(got, Ok(v)),
                    None if tx.is_none() => assert_eq!(got, Err(TryRecvError::Disconnected)),
                    None => assert_eq!(got, Err(TryRecvError::Empty)),
                }
            }
            Op::DropSender => tx = None,
            Op::DropReceiver => rx = None,
        }
        if let Some(r) = &rx {
            assert_eq!(r.len(), model.len());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn model_unbounded(ops in proptest::collection::vec(op(), 0..200)) {
        check(None, ops);
    }

    #[test]
    fn model_bounded(cap in 1usize..6, ops in proptest::collection::vec(op(), 0..200)) {
        check(Some(cap), ops);
    }
}
