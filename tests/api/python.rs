//! The Hub cache shared with the real Python client (`huggingface_hub`, which the test command
//! installs in a virtual environment): miLLM reuses what Python downloaded without fetching the
//! weights again, and Python, offline, reads what miLLM downloaded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use millm_testkit::{FakeHub, FakeRepo};
use sha2::{Digest, Sha256};

use crate::downloads::{cache_of, download_body, files_in, wait_status};
use crate::support::{spawn_app_with_hub, Db, TestApp};

fn python() -> String {
    std::env::var("MILLM_TEST_PYTHON").expect(
        "MILLM_TEST_PYTHON is not set: run the tests with `bash scripts/test.sh`, which installs huggingface_hub",
    )
}

const FETCH: &str = r#"
import sys
from huggingface_hub import hf_hub_download
repo, cache = sys.argv[1], sys.argv[2]
for name in sys.argv[3:]:
    print(hf_hub_download(repo, name, cache_dir=cache))
"#;

/// `hf_hub_download` of each file into `cache`: from `endpoint`, or offline (the cache only)
/// when it is `None`. Returns the paths Python gives.
async fn python_fetch(
    endpoint: Option<&str>,
    cache: &Path,
    repo: &str,
    files: &[String],
) -> Vec<PathBuf> {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg("-c")
        .arg(FETCH)
        .arg(repo)
        .arg(cache)
        .args(files)
        .env("HF_HOME", home.path())
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env_remove("HF_TOKEN");
    match endpoint {
        Some(e) => cmd.env("HF_ENDPOINT", e).env_remove("HF_HUB_OFFLINE"),
        None => cmd.env("HF_HUB_OFFLINE", "1"),
    };
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("python finished")
        .expect("python runs");
    assert!(
        out.status.success(),
        "huggingface_hub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// A tiny Llama repo of only the files a download needs, and their names.
fn repo(id: &str, seed: u64) -> (FakeRepo, Vec<String>) {
    let dir = crate::support::tiny_llama(seed);
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    files.sort();
    (FakeRepo::from_dir(id, dir.path()).unwrap(), files)
}

async fn download(app: &TestApp, repo: &str) {
    let r = app.post("/api/models", download_body(repo)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    wait_status(app, r.data()["id"].as_i64().unwrap(), "ready").await;
}

fn blobs(app: &TestApp, repo: &str) -> Vec<String> {
    files_in(&cache_of(app, repo).join("blobs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_the_python_client_downloaded_is_reused_without_fetching_the_weights() {
    let (repo, files) = repo("test-org/py-first", 31);
    let weights = repo.files["model.safetensors"].bytes.len() as u64;
    let hub = FakeHub::start().await.unwrap();
    hub.add_repo(repo);
    let app = spawn_app_with_hub(Db::Sqlite, &hub.endpoint()).await;
    let cache = app.settings.cache_dir();
    python_fetch(Some(&hub.endpoint()), &cache, "test-org/py-first", &files).await;
    let python_blobs = blobs(&app, "test-org/py-first");
    assert_eq!(python_blobs.len(), files.len(), "{python_blobs:?}");

    let sent = hub.stats().bytes_sent();
    download(&app, "test-org/py-first").await;
    let fetched = hub.stats().bytes_sent() - sent;
    assert!(
        fetched < 64 << 10,
        "only the safetensors header was read ({fetched} bytes, weights {weights})"
    );
    assert_eq!(
        blobs(&app, "test-org/py-first"),
        python_blobs,
        "the same blobs"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_offline_reads_what_millm_downloaded() {
    let (repo, files) = repo("test-org/millm-first", 32);
    let expected: Vec<(String, String)> = files
        .iter()
        .map(|f| (f.clone(), hex::encode(Sha256::digest(&repo.files[f].bytes))))
        .collect();
    let hub = FakeHub::start().await.unwrap();
    hub.add_repo(repo);
    let app = spawn_app_with_hub(Db::Sqlite, &hub.endpoint()).await;
    download(&app, "test-org/millm-first").await;
    let cache = app.settings.cache_dir();
    // Offline: Python resolves `main` through refs/main and the snapshot links alone.
    let paths = python_fetch(None, &cache, "test-org/millm-first", &files).await;
    assert_eq!(paths.len(), files.len());
    for (path, (name, sha)) in paths.iter().zip(&expected) {
        assert!(path.ends_with(name), "{path:?}");
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&hex::encode(Sha256::digest(&bytes)), sha, "{name}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_model_keeps_the_blobs_the_python_clients_snapshot_still_links() {
    let (repo, files) = repo("test-org/py-shared", 33);
    let first_commit = repo.commit.clone();
    let hub = FakeHub::start().await.unwrap();
    hub.add_repo(repo.clone());
    let app = spawn_app_with_hub(Db::Sqlite, &hub.endpoint()).await;
    let cache = app.settings.cache_dir();
    // Python downloads the repo at its first commit...
    let python_paths =
        python_fetch(Some(&hub.endpoint()), &cache, "test-org/py-shared", &files).await;
    let python_blobs = blobs(&app, "test-org/py-shared");
    // ...then the repo gets a new commit with the same files, which this server downloads:
    // every blob is reused, only its own snapshot links are new.
    let mut next = repo;
    next.commit = hex::encode(Sha256::digest(b"a second commit"))[..40].to_string();
    hub.add_repo(next);
    let r = app
        .post("/api/models", download_body("test-org/py-shared"))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.data()["id"].as_i64().unwrap();
    wait_status(&app, id, "ready").await;
    assert_eq!(blobs(&app, "test-org/py-shared"), python_blobs, "reused");

    assert_eq!(app.delete(&format!("/api/models/{id}")).await.status, 200);
    // Python's snapshot still resolves, every file with its bytes.
    let snapshot = cache_of(&app, "test-org/py-shared")
        .join("snapshots")
        .join(&first_commit);
    for (path, name) in python_paths.iter().zip(&files) {
        assert!(path.starts_with(&snapshot), "{path:?}");
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{name} dangles: {e}"));
        assert!(!bytes.is_empty(), "{name}");
    }
    assert_eq!(
        blobs(&app, "test-org/py-shared"),
        python_blobs,
        "none removed"
    );
    app.stop().await;
}
