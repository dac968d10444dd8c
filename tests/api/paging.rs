//! `GET /api/models` with `limit`, `offset`, `status` and `q`, and `X-Total-Count`, on both
//! databases: pages are slices of the full list, filters match what they say, bad values are
//! `VALIDATION_ERROR` naming the parameter.

use millm::domain::{ModelStatus, Quantization};
use millm::store::Store;
use serde_json::Value;

use crate::on_both_databases;
use crate::registry::hub_model;
use crate::support::{spawn_app, Db, TestApp};

/// The ids and the `X-Total-Count` of one list request.
async fn page(app: &TestApp, query: &str) -> (Vec<i64>, u64) {
    let resp = app
        .http
        .get(app.url(&format!("/api/models{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{query}");
    let total = resp.headers()["x-total-count"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    let ids = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    (ids, total)
}

async fn paging_and_filtering_follow_the_contract(db: Db) {
    let app = spawn_app(db).await;
    let store = Store::connect(&app.settings.database_url()).await.unwrap();
    let mut failed = Vec::new();
    for i in 0..12 {
        let row = store
            .insert_model(hub_model(&format!("org/alpha-{i}"), Quantization::Q4))
            .await
            .unwrap();
        if i % 3 == 0 {
            store
                .transition(row.id, &[ModelStatus::Ready], ModelStatus::Error, Some("x"))
                .await
                .unwrap();
            failed.push(row.id);
        }
    }
    for i in 0..8 {
        store
            .insert_model(hub_model(&format!("Other/Beta-{i}"), Quantization::Q8))
            .await
            .unwrap();
    }
    let odd = store
        .insert_model(hub_model("org/50pct_off", Quantization::Q2))
        .await
        .unwrap();
    store.close().await;

    let (all, total) = page(&app, "").await;
    assert_eq!((all.len(), total), (21, 21));
    assert!(all.windows(2).all(|w| w[0] > w[1]), "newest first");

    assert_eq!(page(&app, "?limit=10").await, (all[..10].to_vec(), 21));
    assert_eq!(
        page(&app, "?limit=10&offset=10").await,
        (all[10..20].to_vec(), 21)
    );
    assert_eq!(
        page(&app, "?offset=20&limit=10").await,
        (all[20..].to_vec(), 21)
    );
    assert_eq!(page(&app, "?limit=5&offset=40").await, (vec![], 21));
    assert_eq!(page(&app, "?offset=19").await, (all[19..].to_vec(), 21));

    let (errors, n) = page(&app, "?status=error").await;
    failed.reverse();
    assert_eq!((errors, n), (failed.clone(), 4));
    assert_eq!(
        page(&app, "?status=error&limit=1&offset=1").await,
        (failed[1..2].to_vec(), 4)
    );

    // Case-insensitive on the name and the repo id; `%` and `_` are plain characters.
    assert_eq!(page(&app, "?q=BETA").await.1, 8);
    assert_eq!(page(&app, "?q=other%2F").await.1, 8);
    assert_eq!(page(&app, "?q=alpha-1").await.1, 3, "alpha-1, -10, -11");
    assert_eq!(page(&app, "?q=t_o").await, (vec![odd.id], 1));
    assert_eq!(page(&app, "?q=%25").await, (vec![], 0));
    assert_eq!(
        page(&app, "?q=%20%20").await,
        (all.clone(), 21),
        "blank is no filter"
    );
    assert_eq!(
        page(&app, "?q=alpha&status=error&limit=2").await,
        (failed[..2].to_vec(), 4)
    );

    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=ten", "limit"),
        ("?offset=-1", "offset"),
        ("?status=gone", "status"),
    ] {
        let reply = app.get(&format!("/api/models{query}")).await;
        assert_eq!(reply.status, 422, "{query}");
        assert_eq!(reply.code(), "VALIDATION_ERROR");
        assert_eq!(reply.body["error"]["details"]["field"], field, "{query}");
    }
    let long = "x".repeat(201);
    let reply = app.get(&format!("/api/models?q={long}")).await;
    assert_eq!(reply.body["error"]["details"]["field"], "q");
    app.stop().await;
}

on_both_databases!(paging_and_filtering_follow_the_contract);
