//! Start-up with the settings a new user writes: a SQLite `DATABASE_URL` naming a file, or a
//! folder, that does not exist yet is created (with its folders), as the default one is.

use std::path::{Path, PathBuf};

use millm::config::Secret;
use millm_testkit::TinyLlama;

use crate::support::{spawn_with, test_settings, Db};

/// True when `path` is a SQLite database file.
fn is_sqlite_file(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| bytes.starts_with(b"SQLite format 3\0"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_url_naming_a_new_file_or_folder_creates_it_and_keeps_the_registry_there() {
    // (how the URL starts, what it names under the root, its query, the file made).
    let cases = [
        ("sqlite:", "a/b/new.db", "", "a/b/new.db"),
        ("sqlite://", "a/b/new.db", "", "a/b/new.db"),
        ("sqlite://", "a/b/new.db", "?mode=rwc", "a/b/new.db"),
        ("sqlite:", "a/b/", "", "a/b/millm.db"),
    ];
    for (scheme, named, query, file) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        // Outside the data folder, so nothing else creates its folders.
        let root = dir.path().join("elsewhere");
        let url = format!("{scheme}{}/{named}{query}", root.display());
        let expected: PathBuf = root.join(file);
        let mut settings = test_settings(Db::Sqlite, dir.path()).await;
        settings.database_url = Some(Secret::new(url.clone()));

        let app = spawn_with(settings, dir).await;
        let health = app.get("/api/health").await;
        assert_eq!(health.status, 200, "{url}: {}", health.body);
        assert_eq!(health.data()["database"], "ok", "{url}");
        let (id, _) = app.add_model("tiny", TinyLlama::default(), "Q8").await;
        let (settings, dir) = app.stop_keeping_data().await;
        assert!(
            is_sqlite_file(&expected),
            "{url} made {}",
            expected.display()
        );

        // The registry lives in that file: a restart on the same URL finds the model.
        let app = spawn_with(settings, dir).await;
        let reply = app.get(&format!("/api/models/{id}")).await;
        assert_eq!(reply.status, 200, "{url}: {}", reply.body);
        app.stop().await;
    }
}
