//! The registry on SQLite and PostgreSQL: the same tests, through one macro.

use millm::domain::{ModelStatus, Quantization, Source};
use millm::store::{NewModel, Store, StoreError, StoredFile};

use crate::on_both_databases;
use crate::support::{fresh_postgres_database, Db};

async fn store_for(db: Db) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = match db {
        Db::Sqlite => format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display()),
        Db::Postgres => fresh_postgres_database().await,
    };
    (
        Store::connect(&url).await.expect("connect and migrate"),
        dir,
    )
}

pub(crate) fn hub_model(repo: &str, q: Quantization) -> NewModel {
    NewModel {
        name: repo.rsplit('/').next().unwrap().into(),
        source: Source::Huggingface,
        repo_id: Some(repo.into()),
        revision: None,
        requested_revision: Some("main".into()),
        local_path: None,
        params: Some("1.4M".into()),
        architecture: Some("LlamaForCausalLM".into()),
        quantization: q,
        disk_size_mb: Some(6),
        estimated_memory_mb: Some(20),
        status: ModelStatus::Ready,
        cache_path: None,
        config_json: Some("{}".into()),
        files: vec![StoredFile {
            path: "model.safetensors".into(),
            size: 42,
        }],
        parameter_count: Some(1_400_000),
        trust_remote_code: false,
    }
}

async fn rows_round_trip_every_field(db: Db) {
    let (store, _dir) = store_for(db).await;
    let row = store
        .insert_model(hub_model("org/a", Quantization::Q8))
        .await
        .unwrap();
    let back = store.get_model(row.id).await.unwrap();
    assert_eq!(back.repo_id.as_deref(), Some("org/a"));
    assert_eq!(back.quantization, Quantization::Q8);
    assert_eq!(
        back.files,
        vec![StoredFile {
            path: "model.safetensors".into(),
            size: 42
        }]
    );
    assert_eq!(back.parameter_count, Some(1_400_000));
    assert_eq!(back.status, ModelStatus::Ready);
    assert!(back.created_at.ends_with('Z'));
    assert!(matches!(
        store.get_model(row.id + 1000).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn repo_and_quantization_are_unique_together(db: Db) {
    let (store, _dir) = store_for(db).await;
    let first = store
        .insert_model(hub_model("org/b", Quantization::Q4))
        .await
        .unwrap();
    store
        .insert_model(hub_model("org/b", Quantization::Q8))
        .await
        .expect("another quantization is another model");
    match store
        .insert_model(hub_model("org/b", Quantization::Q4))
        .await
    {
        Err(StoreError::Conflict {
            existing_model_id, ..
        }) => assert_eq!(existing_model_id, first.id),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

async fn racing_inserts_of_one_model_let_exactly_one_win(db: Db) {
    let (store, _dir) = store_for(db).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .insert_model(hub_model("org/race", Quantization::Q4))
                .await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(won, 1);
}

async fn two_concurrent_conflicting_status_changes_cannot_both_succeed(db: Db) {
    let (store, _dir) = store_for(db).await;
    for round in 0..20 {
        let row = store
            .insert_model(hub_model(&format!("org/m{round}"), Quantization::Q4))
            .await
            .unwrap();
        // A load (ready → loading) racing a delete (only from ready/error) and another load.
        let (a, b, c) = tokio::join!(
            store.transition(
                row.id,
                &[ModelStatus::Ready, ModelStatus::Error],
                ModelStatus::Loading,
                None
            ),
            store.transition(
                row.id,
                &[ModelStatus::Ready, ModelStatus::Error],
                ModelStatus::Loading,
                None
            ),
            store.delete_if(row.id, &[ModelStatus::Ready, ModelStatus::Error]),
        );
        let winners = [a.unwrap(), b.unwrap(), c.unwrap()]
            .iter()
            .filter(|w| **w)
            .count();
        assert_eq!(
            winners, 1,
            "round {round}: exactly one of three conflicting changes wins"
        );
    }
}

async fn start_up_resets_models_left_in_memory(db: Db) {
    let (store, _dir) = store_for(db).await;
    let a = store
        .insert_model(hub_model("org/loaded", Quantization::Q4))
        .await
        .unwrap();
    let b = store
        .insert_model(hub_model("org/loading", Quantization::Q4))
        .await
        .unwrap();
    assert!(store
        .transition(a.id, &[ModelStatus::Ready], ModelStatus::Loaded, None)
        .await
        .unwrap());
    assert!(store.get_model(a.id).await.unwrap().loaded_at.is_some());
    assert!(store
        .transition(b.id, &[ModelStatus::Ready], ModelStatus::Loading, None)
        .await
        .unwrap());
    assert_eq!(store.reset_memory_states().await.unwrap(), 2);
    for id in [a.id, b.id] {
        let row = store.get_model(id).await.unwrap();
        assert_eq!(row.status, ModelStatus::Ready);
        assert!(row.loaded_at.is_none());
    }
}

async fn error_messages_travel_with_the_status(db: Db) {
    let (store, _dir) = store_for(db).await;
    let row = store
        .insert_model(hub_model("org/e", Quantization::Q4))
        .await
        .unwrap();
    assert!(store
        .transition(
            row.id,
            &[ModelStatus::Ready],
            ModelStatus::Error,
            Some("boom")
        )
        .await
        .unwrap());
    assert_eq!(
        store
            .get_model(row.id)
            .await
            .unwrap()
            .error_message
            .as_deref(),
        Some("boom")
    );
    assert!(store
        .transition(row.id, &[ModelStatus::Error], ModelStatus::Ready, None)
        .await
        .unwrap());
    assert_eq!(store.get_model(row.id).await.unwrap().error_message, None);
    assert!(
        !store
            .transition(row.id, &[ModelStatus::Error], ModelStatus::Ready, None)
            .await
            .unwrap(),
        "not from ready"
    );
}

async fn the_listed_rows_reflect_every_change(db: Db) {
    let (store, _dir) = store_for(db).await;
    assert!(store.list_summaries().await.unwrap().is_empty());
    let a = store
        .insert_model(hub_model("org/l1", Quantization::Q4))
        .await
        .unwrap();
    let b = store
        .insert_model(hub_model("org/l2", Quantization::Q4))
        .await
        .unwrap();
    let ids: Vec<i64> = store
        .list_summaries()
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec![b.id, a.id]);
    assert!(store
        .transition(a.id, &[ModelStatus::Ready], ModelStatus::Error, Some("x"))
        .await
        .unwrap());
    let list = store.list_summaries().await.unwrap();
    assert_eq!(list[1].status, ModelStatus::Error);
    assert_eq!(list[1].error_message.as_deref(), Some("x"));
    assert!(store.delete_if(b.id, &[ModelStatus::Ready]).await.unwrap());
    assert_eq!(store.list_summaries().await.unwrap().len(), 1);
}

/// A registry made before the (local_path, quantization) migration keeps every row and id,
/// and afterwards takes one folder at a second quantization but not twice at one.
async fn the_local_path_migration_keeps_every_row(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let (url, kind) = match db {
        Db::Sqlite => (
            format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display()),
            "sqlite",
        ),
        Db::Postgres => (fresh_postgres_database().await, "postgres"),
    };
    // The registry as the first release left it: only its first migration.
    let first = dir.path().join("first");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::copy(
        format!("migrations/{kind}/0001_models.sql"),
        first.join("0001_models.sql"),
    )
    .unwrap();
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(first.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (path, q) in [("/models/a", "Q4"), ("/models/b", "Q8")] {
        let row = sqlx::query(
            "INSERT INTO models (name, source, local_path, quantization, status, created_at, updated_at) \
             VALUES ($1, 'local', $1, $2, 'ready', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z') RETURNING id",
        )
        .bind(path)
        .bind(q)
        .fetch_one(&pool)
        .await
        .unwrap();
        ids.push(sqlx::Row::try_get::<i64, _>(&row, "id").unwrap());
    }
    pool.close().await;

    let store = Store::connect(&url).await.expect("migrates");
    let rows = store.list_models().await.unwrap();
    let kept: Vec<(i64, Option<String>)> =
        rows.iter().map(|r| (r.id, r.local_path.clone())).collect();
    assert_eq!(
        kept,
        vec![
            (ids[1], Some("/models/b".into())),
            (ids[0], Some("/models/a".into()))
        ]
    );
    let local = |q: Quantization| NewModel {
        source: Source::Local,
        repo_id: None,
        requested_revision: None,
        local_path: Some("/models/a".into()),
        ..hub_model("x/a", q)
    };
    let again = store.insert_model(local(Quantization::Q8)).await.unwrap();
    assert!(
        again.id > ids[1],
        "ids keep growing after the rebuild: {}",
        again.id
    );
    match store.insert_model(local(Quantization::Q4)).await {
        Err(StoreError::Conflict {
            existing_model_id, ..
        }) => assert_eq!(existing_model_id, ids[0]),
        other => panic!("expected a conflict with the first row, got {other:?}"),
    }
}

on_both_databases!(
    the_local_path_migration_keeps_every_row,
    the_listed_rows_reflect_every_change,
    rows_round_trip_every_field,
    repo_and_quantization_are_unique_together,
    racing_inserts_of_one_model_let_exactly_one_win,
    two_concurrent_conflicting_status_changes_cannot_both_succeed,
    start_up_resets_models_left_in_memory,
    error_messages_travel_with_the_status,
);
