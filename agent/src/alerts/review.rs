//! The human review queue: review-band windows waiting for a reviewer's label.
//!
//! # Design constraints
//!
//! - **One writer.** The queue is the `review_queue` table, written only by the commit log: a
//!   review-band alert record enters the queue in the same transaction that commits it to the
//!   outbox ([`enqueue`]), so a window is queued exactly once across restarts (the alert stage's
//!   outputs are exactly-once). A label ([`label`]) is committed together with its
//!   `review_label` outbox record: a label the API answered for is stored and will be uplinked.
//! - **Bounded.** `alerts.review_queue_capacity` rows at most; a new item beyond that drops the
//!   oldest row (lowest id). A dropped row that was still unlabelled is counted
//!   (`vigil_review_queue_dropped_total`); a labelled one was already uplinked.
//! - **Labelled items stay** (no longer pending) until they age out, so `GET /api/review` can tell
//!   "labelled" from "unknown" and a reviewer may correct a label: the newer `review_label` record
//!   supersedes the older one for the same `(entity, window_end_ms)`.

use cloud_uplink::{Body, ModelRef};
use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use crate::store::{self, DbContext, StoreError};

/// A reviewer's verdict on a review-band window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Normal,
    Anomaly,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Normal => "normal",
            Verdict::Anomaly => "anomaly",
        }
    }
}

/// The label of a queued item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub verdict: Verdict,
    pub by: String,
    pub labelled_ms: i64,
}

/// One review-band window in the `review_queue` table (CBOR), keyed by its queue id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewItem {
    pub entity: String,
    pub window_end_ms: i64,
    pub score: f64,
    pub model: ModelRef,
    pub message: String,
    /// `None` while pending.
    pub label: Option<Label>,
}

/// Queues `body` if it is a review-band alert record. Returns how many unlabelled items the
/// bound dropped.
pub fn enqueue(
    queue: &mut redb::Table<'_, u64, &'static [u8]>,
    meta: &mut redb::Table<'_, &'static str, u64>,
    capacity: u64,
    window_end_ms: i64,
    body: &Body,
) -> Result<u64, StoreError> {
    let Body::Alert { entity, state: cloud_uplink::AlertState::Review, score, model, message, .. } = body else {
        return Ok(0);
    };
    let id = store::meta_get(meta, store::NEXT_REVIEW_ID)?.max(1);
    let item = ReviewItem { entity: entity.clone(), window_end_ms, score: *score, model: model.clone(), message: message.clone(), label: None };
    queue.insert(id, store::to_cbor(&item).as_slice()).doing("writing review_queue")?;
    meta.insert(store::NEXT_REVIEW_ID, id + 1).doing("writing meta")?;
    let mut dropped = 0;
    while queue.len().doing("counting review_queue")? > capacity.max(1) {
        let Some((k, v)) = queue.pop_first().doing("trimming review_queue")? else { break };
        let old: ReviewItem = store::from_cbor("review_queue", k.value(), v.value())?;
        if old.label.is_none() {
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// Labels item `id`; returns the labelled item and its `review_label` record body, `None` for
/// an unknown id (never queued, or aged out).
pub fn label(queue: &mut redb::Table<'_, u64, &'static [u8]>, id: u64, label: &Label) -> Result<Option<(ReviewItem, Body)>, StoreError> {
    let Some(mut item) = queue.get(id).doing("reading review_queue")?.map(|v| store::from_cbor::<ReviewItem>("review_queue", id, v.value())).transpose()? else {
        return Ok(None);
    };
    item.label = Some(label.clone());
    queue.insert(id, store::to_cbor(&item).as_slice()).doing("writing review_queue")?;
    let body = Body::ReviewLabel {
        entity: item.entity.clone(),
        window_end_ms: item.window_end_ms,
        score: item.score,
        model: item.model.clone(),
        label: label.verdict.as_str().to_string(),
        by: label.by.clone(),
        labelled_ms: label.labelled_ms,
    };
    Ok(Some((item, body)))
}

/// `(id, item)` of every pending (unlabelled) item, oldest first, at most `limit`.
pub fn pending(db: &redb::Database, limit: usize) -> Result<Vec<(u64, ReviewItem)>, StoreError> {
    use redb::ReadableDatabase;
    let txn = db.begin_read().doing("reading review_queue")?;
    let queue = txn.open_table(store::REVIEW_QUEUE).doing("opening review_queue")?;
    let mut out = Vec::new();
    for row in queue.iter().doing("reading review_queue")? {
        let (k, v) = row.doing("reading review_queue")?;
        let item: ReviewItem = store::from_cbor("review_queue", k.value(), v.value())?;
        if item.label.is_none() {
            out.push((k.value(), item));
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloud_uplink::AlertState;

    fn review(entity: &str) -> Body {
        alert(entity, AlertState::Review)
    }

    fn alert(entity: &str, state: AlertState) -> Body {
        Body::Alert {
            entity: entity.into(),
            state,
            band: "review".into(),
            score: 0.5,
            model: ModelRef { name: "m".into(), version: "1".into(), sha256: "00".into() },
            message: "needs review".into(),
        }
    }

    /// The bound drops the oldest rows and counts only unlabelled ones; labels find items by
    /// id and unknown ids are `None`; other records are not queued.
    #[test]
    fn bounded_queue_drops_oldest_and_labels_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let db = store::open(dir.path()).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut queue = txn.open_table(store::REVIEW_QUEUE).unwrap();
            let mut meta = txn.open_table(store::META).unwrap();
            let raised = alert("x", AlertState::Raised);
            assert_eq!(enqueue(&mut queue, &mut meta, 2, 1, &raised).unwrap(), 0);
            assert_eq!(queue.len().unwrap(), 0, "only review-band records are queued");
            assert_eq!(enqueue(&mut queue, &mut meta, 2, 1000, &review("a")).unwrap(), 0);
            assert_eq!(enqueue(&mut queue, &mut meta, 2, 2000, &review("b")).unwrap(), 0);
            let l = Label { verdict: Verdict::Normal, by: "t".into(), labelled_ms: 5 };
            let (item, body) = label(&mut queue, 1, &l).unwrap().expect("item 1");
            assert_eq!((item.entity.as_str(), item.window_end_ms), ("a", 1000));
            assert!(matches!(body, Body::ReviewLabel { ref label, window_end_ms: 1000, .. } if label == "normal"), "{body:?}");
            // Item 1 (labelled) goes first: not counted; then item 2 (pending): counted.
            assert_eq!(enqueue(&mut queue, &mut meta, 2, 3000, &review("c")).unwrap(), 0);
            assert_eq!(enqueue(&mut queue, &mut meta, 2, 4000, &review("d")).unwrap(), 1);
            assert!(label(&mut queue, 1, &l).unwrap().is_none(), "aged out");
            assert!(label(&mut queue, 99, &l).unwrap().is_none());
        }
        txn.commit().unwrap();
        let p = pending(&db, 10).unwrap();
        assert_eq!(p.iter().map(|(id, i)| (*id, i.entity.as_str())).collect::<Vec<_>>(), vec![(3, "c"), (4, "d")]);
    }
}
