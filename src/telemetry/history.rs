//! The action history's outbox: decision lines waiting to be published to
//! JetStream (by `bus::history`), each on its resource's subject and under
//! its own id. Bounded in lines and bytes; a full outbox drops the line and
//! counts it, so a decision never waits for the history.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;

use super::metrics;

/// One line bound for the history.
#[derive(Debug, Clone)]
pub struct HistoryRecord {
    /// `<prefix>.<resource type>.<resource id>`, each token escaped
    pub subject: String,
    /// the line's own id: JetStream's `Nats-Msg-Id`, so a retry is never
    /// stored twice
    pub id: String,
    /// the decision line, as the log writes it (without the newline)
    pub line: Bytes,
    /// when it was queued: a line retried past `history.retry_for` is
    /// dropped and counted
    pub queued: Instant,
}

#[derive(Debug, Default)]
struct Waiting {
    records: VecDeque<HistoryRecord>,
    bytes: usize,
}

#[derive(Debug)]
struct Shared {
    waiting: Mutex<Waiting>,
    /// records taken and not yet settled (published, dropped or put back)
    in_flight: std::sync::atomic::AtomicUsize,
    ready: tokio::sync::Notify,
    max_lines: usize,
    max_bytes: usize,
}

/// The outbox; cheap to clone.
#[derive(Debug, Clone)]
pub struct HistoryQueue {
    shared: Arc<Shared>,
}

impl HistoryQueue {
    /// An empty outbox holding at most `max_lines` lines and `max_bytes`
    /// bytes of them.
    pub fn new(max_lines: usize, max_bytes: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                waiting: Mutex::new(Waiting::default()),
                in_flight: std::sync::atomic::AtomicUsize::new(0),
                ready: tokio::sync::Notify::new(),
                max_lines: max_lines.max(1),
                max_bytes: max_bytes.max(1),
            }),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.shared
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `record` at the back, or drops it (counted `queue_full`)
    /// when the outbox is full. Never waits.
    pub fn push(&self, record: HistoryRecord) {
        let mut waiting = self.waiting();
        if waiting.records.len() >= self.shared.max_lines
            || waiting.bytes + record.line.len() > self.shared.max_bytes
        {
            drop(waiting);
            metrics()
                .history_dropped
                .with_label_values(&["queue_full"])
                .inc();
            return;
        }
        waiting.bytes += record.line.len();
        waiting.records.push_back(record);
        let lines = waiting.records.len();
        drop(waiting);
        metrics().history_queue_lines.set(gauge(lines));
        self.shared.ready.notify_one();
    }

    /// Puts records taken but not published back at the front, in their
    /// order, ahead of newer ones; what no longer fits is dropped and
    /// counted (`queue_full`).
    pub fn put_back(&self, records: Vec<HistoryRecord>) {
        let mut waiting = self.waiting();
        let mut dropped = 0u64;
        for record in records.into_iter().rev() {
            if waiting.records.len() >= self.shared.max_lines
                || waiting.bytes + record.line.len() > self.shared.max_bytes
            {
                dropped += 1;
                continue;
            }
            waiting.bytes += record.line.len();
            waiting.records.push_front(record);
        }
        let lines = waiting.records.len();
        drop(waiting);
        metrics().history_queue_lines.set(gauge(lines));
        if dropped > 0 {
            metrics()
                .history_dropped
                .with_label_values(&["queue_full"])
                .inc_by(dropped);
        }
        self.shared.ready.notify_one();
    }

    /// Takes up to `most` records from the front, waiting until there is
    /// at least one.
    pub async fn take(&self, most: usize) -> Vec<HistoryRecord> {
        loop {
            let ready = self.shared.ready.notified();
            {
                let mut waiting = self.waiting();
                if !waiting.records.is_empty() {
                    let n = most.max(1).min(waiting.records.len());
                    let taken: Vec<HistoryRecord> = waiting.records.drain(..n).collect();
                    self.shared
                        .in_flight
                        .fetch_add(taken.len(), std::sync::atomic::Ordering::AcqRel);
                    waiting.bytes -= taken.iter().map(|r| r.line.len()).sum::<usize>();
                    metrics()
                        .history_queue_lines
                        .set(gauge(waiting.records.len()));
                    return taken;
                }
            }
            ready.await;
        }
    }

    /// Says that `n` records taken are settled: published, dropped, or
    /// put back (after [`Self::put_back`]).
    pub fn settled(&self, n: usize) {
        self.shared
            .in_flight
            .fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
    }

    /// Lines waiting or being published.
    pub fn len(&self) -> usize {
        self.waiting().records.len()
            + self
                .shared
                .in_flight
                .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether every line queued has been settled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn gauge(lines: usize) -> i64 {
    i64::try_from(lines).unwrap_or(i64::MAX)
}

/// `text` as one NATS subject token: ASCII letters, digits and `-` as they
/// are, every other byte (`_` included) as `_` and two uppercase hex
/// digits, and the empty text as `_`. Injective, so one resource has one
/// subject and no id can reach another's (`.`, `*`, `>` and spaces never
/// survive).
pub fn subject_token(text: &str) -> String {
    if text.is_empty() {
        return "_".to_owned();
    }
    let mut token = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            token.push(char::from(byte));
        } else {
            let _ = std::fmt::Write::write_fmt(&mut token, format_args!("_{byte:02X}"));
        }
    }
    token
}

/// The history subject of a resource: `<prefix>.<type>.<id>`, type and id
/// each escaped by [`subject_token`].
pub fn subject(prefix: &str, resource_type: &str, resource_id: &str) -> String {
    format!(
        "{prefix}.{}.{}",
        subject_token(resource_type),
        subject_token(resource_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> HistoryRecord {
        HistoryRecord {
            subject: format!("s.{n}"),
            id: n.to_string(),
            line: Bytes::from(vec![b'x'; 10]),
            queued: Instant::now(),
        }
    }

    #[test]
    fn a_subject_token_is_injective_and_never_a_wildcard_or_separator() {
        assert_eq!(subject_token("alice-personal"), "alice-personal");
        assert_eq!(
            subject_token("Brokerage::Account"),
            "Brokerage_3A_3AAccount"
        );
        assert_eq!(subject_token(""), "_");
        assert_eq!(subject_token("_"), "_5F");
        assert_eq!(subject_token("a.b *>é"), "a_2Eb_20_2A_3E_C3_A9");
        assert_eq!(
            subject("mandate.history", "Brokerage::Account", "x.y"),
            "mandate.history.Brokerage_3A_3AAccount.x_2Ey"
        );
        // Distinct texts, distinct tokens, including the tricky ones.
        let texts = ["", "_", "_5F", "a_", "a_5F", ".", "_2E", "-", "A", "a"];
        let tokens: std::collections::HashSet<String> =
            texts.iter().map(|t| subject_token(t)).collect();
        assert_eq!(tokens.len(), texts.len());
    }

    #[tokio::test]
    async fn the_outbox_is_bounded_in_lines_and_bytes_and_keeps_order_on_put_back() {
        let queue = HistoryQueue::new(3, 25);
        queue.push(record(1));
        queue.push(record(2));
        queue.push(record(3)); // 30 bytes > 25: dropped
        assert_eq!(queue.len(), 2);
        let taken = queue.take(10).await;
        assert_eq!(taken.len(), 2);
        assert_eq!(queue.len(), 2, "taken, not settled");
        queue.push(record(4));
        queue.put_back(taken);
        queue.settled(2);
        let order: Vec<String> = queue.take(10).await.into_iter().map(|r| r.id).collect();
        queue.settled(order.len());
        // Put back in order, ahead of 4, until the bytes ran out: 2 fit, 1
        // did not (dropped and counted).
        assert_eq!(order, ["2", "4"]);
        assert!(queue.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(usize),
        Take(usize),
        PutBack,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (1usize..40).prop_map(Op::Push),
            (1usize..6).prop_map(Op::Take),
            Just(Op::PutBack),
        ]
    }

    proptest::proptest! {
        /// Any sequence of pushes, takes and puts back (the publisher's
        /// retries) against a plain model: the same records in the same
        /// order, the bounds never exceeded, every record waiting or in
        /// hand exactly once (what did not fit was refused).
        #[test]
        fn the_outbox_behaves_as_a_bounded_queue_with_put_back_at_the_front(
            ops in proptest::collection::vec(op(), 1..60)
        ) {
            let (max_lines, max_bytes) = (5usize, 100usize);
            let queue = HistoryQueue::new(max_lines, max_bytes);
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut model: std::collections::VecDeque<(String, usize)> = Default::default();
            let mut hand: Vec<HistoryRecord> = Vec::new();
            let mut model_hand: Vec<(String, usize)> = Vec::new();
            let fits = |model: &std::collections::VecDeque<(String, usize)>, len: usize| {
                model.len() < max_lines && model.iter().map(|(_, l)| l).sum::<usize>() + len <= max_bytes
            };
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Push(len) => {
                        let record = HistoryRecord {
                            subject: "s".to_owned(),
                            id: n.to_string(),
                            line: Bytes::from(vec![b'x'; len]),
                            queued: Instant::now(),
                        };
                        if fits(&model, len) {
                            model.push_back((n.to_string(), len));
                        }
                        queue.push(record);
                    }
                    Op::Take(most) if !model.is_empty() => {
                        let taken = runtime.block_on(queue.take(most));
                        let expected: Vec<_> = model.drain(..most.min(model.len())).collect();
                        let got: Vec<_> = taken.iter().map(|r| (r.id.clone(), r.line.len())).collect();
                        proptest::prop_assert_eq!(&got, &expected);
                        hand.extend(taken);
                        model_hand.extend(expected);
                    }
                    Op::Take(_) => {}
                    Op::PutBack => {
                        let back = std::mem::take(&mut hand);
                        let settled = back.len();
                        for record in std::mem::take(&mut model_hand).into_iter().rev() {
                            if fits(&model, record.1) {
                                model.push_front(record);
                            }
                        }
                        queue.put_back(back);
                        queue.settled(settled);
                    }
                }
                proptest::prop_assert_eq!(queue.len(), model.len() + hand.len());
                proptest::prop_assert!(model.len() <= max_lines);
                proptest::prop_assert!(model.iter().map(|(_, l)| l).sum::<usize>() <= max_bytes);
            }
        }
    }

    #[tokio::test]
    async fn take_waits_for_a_record() {
        let queue = HistoryQueue::new(10, 1000);
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.take(5).await.len() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        queue.push(record(1));
        assert_eq!(waiting.await.unwrap(), 1);
    }
}
