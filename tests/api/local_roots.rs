//! Local folders a caller may register: only under `LOCAL_MODEL_ROOTS` when it is set (with one
//! refusal that says nothing about what exists outside), only regular files of sane size, and
//! folder names that display as what they are.

use millm_testkit::TinyLlama;
use serde_json::json;

use crate::on_both_databases;
use crate::support::{spawn_app, spawn_configured, Db};

async fn folders_outside_the_roots_are_refused_alike_whether_or_not_they_exist(db: Db) {
    let roots = tempfile::tempdir().expect("temp dir");
    let allowed = roots.path().join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    let root = allowed.clone();
    let app = spawn_configured(db, move |s| {
        s.local_model_roots = Some(format!("{},/nonexistent-root", root.display()))
    })
    .await;
    let inside = app.write_model("inside", TinyLlama::default());
    // A model outside the roots (in the app's temp folder), a folder that does not exist, and
    // a link inside a root that points outside it.
    let link = allowed.join("escape");
    std::os::unix::fs::symlink(&inside.dir, &link).unwrap();
    let mut answers = Vec::new();
    for path in [
        inside.dir.display().to_string(),
        "/nowhere/at/all".to_string(),
        "/etc".to_string(),
        link.display().to_string(),
    ] {
        let reply = app.add_local(std::path::Path::new(&path), "Q8").await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        assert_eq!(reply.code(), "INVALID_LOCAL_PATH");
        let message = reply.body["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains("LOCAL_MODEL_ROOTS"), "{message}");
        answers.push(message.replace(&path, "<path>"));
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "one refusal for every folder outside the roots: {answers:?}"
    );

    // Inside a root it works as before.
    let model = TinyLlama::default()
        .write(&allowed.join("tiny"))
        .expect("write test model");
    let reply = app.add_local(&model.dir, "Q8").await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    app.stop().await;
}

on_both_databases!(folders_outside_the_roots_are_refused_alike_whether_or_not_they_exist);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_are_not_regular_or_too_large_are_refused() {
    let app = spawn_app(Db::Sqlite).await;

    // A config.json over the cap.
    let big = app.write_model("big-config", TinyLlama::default());
    let padding = " ".repeat(2 << 20);
    std::fs::write(big.dir.join("config.json"), format!("{{}}{padding}")).unwrap();
    let reply = app.add_local(&big.dir, "Q8").await;
    assert_eq!(reply.code(), "INVALID_LOCAL_PATH", "{}", reply.body);
    assert!(reply.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("limit"));

    // An index naming a shard that is a FIFO: refused at once, never opened.
    let fifo = app.write_model("fifo", TinyLlama::default());
    let shard = fifo.dir.join("model-00001-of-00001.safetensors");
    let c_path = std::ffi::CString::new(shard.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path that lives across the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    std::fs::write(
        fifo.dir.join("model.safetensors.index.json"),
        json!({"weight_map": {"model.embed_tokens.weight": "model-00001-of-00001.safetensors"}})
            .to_string(),
    )
    .unwrap();
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        app.add_local(&fifo.dir, "Q8"),
    )
    .await
    .expect("answered without reading the FIFO");
    assert_eq!(reply.code(), "INVALID_LOCAL_PATH", "{}", reply.body);
    assert!(reply.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not a regular file"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_name_with_bidi_controls_needs_a_custom_name() {
    let app = spawn_app(Db::Sqlite).await;
    let model = app.write_model("llama\u{202e}lmth.exe", TinyLlama::default());
    let reply = app.add_local(&model.dir, "Q8").await;
    assert_eq!(reply.code(), "INVALID_LOCAL_PATH", "{}", reply.body);
    assert!(reply.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("custom_name"));
    let named = app
        .post(
            "/api/models",
            json!({"source": "local", "local_path": model.dir, "quantization": "Q8", "custom_name": "llama"}),
        )
        .await;
    assert_eq!(named.status, 202, "{}", named.body);
    let refused = app
        .post(
            "/api/models",
            json!({"source": "local", "local_path": model.dir, "quantization": "Q4", "custom_name": "a\u{202e}b"}),
        )
        .await;
    assert_eq!(refused.code(), "VALIDATION_ERROR");
    app.stop().await;
}
