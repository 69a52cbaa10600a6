//! What only the in-memory store offers: a clock the test moves, and injected failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use penstock_app::memory_store::MemoryStore;
use penstock_app::store::{Expect, IndexName, ItemKey, ItemStore, Query, StoreError};
use serde_json::json;

fn store_at(now: &Arc<AtomicI64>) -> MemoryStore {
    let now = now.clone();
    MemoryStore::with_clock(Arc::new(move || now.load(Ordering::SeqCst)))
}

#[tokio::test]
async fn an_item_lives_until_its_expiry_second_has_passed() {
    let now = Arc::new(AtomicI64::new(1_000));
    let store = store_at(&now);
    let key = ItemKey::new("delivery", "abc");
    store
        .put(key.clone(), Expect::Absent, json!({}), None, Some(1_010))
        .await
        .unwrap();

    now.store(1_010, Ordering::SeqCst);
    assert!(
        store.get(&key).await.unwrap().is_some(),
        "live at its expiry second"
    );
    assert_eq!(
        store
            .put(key.clone(), Expect::Absent, json!({}), None, None)
            .await,
        Err(StoreError::Conflict {
            pk: "delivery".into(),
            sk: "abc".into()
        })
    );

    now.store(1_011, Ordering::SeqCst);
    assert_eq!(store.get(&key).await.unwrap(), None);
    let page = store
        .query(&Query {
            index: IndexName::Primary,
            pk: "delivery".into(),
            sk_prefix: None,
            after: None,
            limit: 10,
            descending: false,
        })
        .await
        .unwrap();
    assert!(page.items.is_empty());
    assert_eq!(
        store
            .put(
                key.clone(),
                Expect::Absent,
                json!({"again": true}),
                None,
                None
            )
            .await,
        Ok(1)
    );
}

#[tokio::test]
async fn injected_failures_change_nothing_and_run_out() {
    let store = MemoryStore::new();
    let key = ItemKey::new("p", "s");
    store.fail_next(2, StoreError::Throttled("slow down".into()));
    assert_eq!(
        store
            .put(key.clone(), Expect::Absent, json!({}), None, None)
            .await,
        Err(StoreError::Throttled("slow down".into()))
    );
    assert_eq!(
        store.get(&key).await,
        Err(StoreError::Throttled("slow down".into()))
    );
    assert_eq!(
        store.get(&key).await,
        Ok(None),
        "the failed put wrote nothing"
    );
    assert_eq!(
        store
            .put(key.clone(), Expect::Absent, json!({}), None, None)
            .await,
        Ok(1)
    );
}

#[tokio::test]
async fn a_failure_after_commit_hides_a_write_that_happened() {
    let store = MemoryStore::new();
    let key = ItemKey::new("p", "s");
    store.fail_next_after_commit(1, StoreError::Unavailable("timed out".into()));
    let result = store
        .put(key.clone(), Expect::Absent, json!({"n": 1}), None, None)
        .await;
    assert_eq!(result, Err(StoreError::Unavailable("timed out".into())));
    assert!(result.unwrap_err().is_retryable());
    let item = store
        .get(&key)
        .await
        .unwrap()
        .expect("the write was applied");
    assert_eq!((item.version, item.body), (1, json!({"n": 1})));
    assert_eq!(store.snapshot().len(), 1);
}
