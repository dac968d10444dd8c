//! Registering local folders: exact parameter counts, estimates, deletes that never touch files.

use millm_testkit::TinyLlama;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::on_both_databases;
use crate::support::{spawn_app, Db};

fn hash_tree(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        out.push((
            path.file_name().unwrap().to_string_lossy().to_string(),
            hex::encode(Sha256::digest(&bytes)),
        ));
    }
    out.sort();
    out
}

async fn local_folder_is_ready_with_exact_parameter_count(db: Db) {
    let app = spawn_app(db).await;
    for (name, spec) in [
        ("f32-single", TinyLlama::default()),
        ("bf16-sharded", TinyLlama::default().bf16().sharded(3)),
    ] {
        let model = app.write_model(name, spec);
        let reply = app.add_local(&model.dir, "Q4").await;
        assert_eq!(reply.status, 202, "{}", reply.body);
        let data = reply.data();
        assert_eq!(data["status"], "ready");
        assert_eq!(data["source"], "local");
        assert_eq!(data["architecture"], "LlamaForCausalLM");
        assert_eq!(data["quantization"], "Q4");
        assert_eq!(data["name"], name);
        let expected = millm::domain::human_params(model.parameter_count);
        assert_eq!(data["params"], expected.as_str());
        let disk: u64 = model.files.iter().map(|(_, s)| s).sum();
        assert_eq!(data["disk_size_mb"], json!(millm::domain::mib_ceil(disk)));
        assert!(data["estimated_memory_mb"].as_i64().unwrap() > 0);
        assert!(data["num_parameters"].is_null(), "only while loaded");

        // The exact count is what the registry stored from the headers.
        let id = data["id"].as_i64().unwrap();
        let row = app_store(&app).await.get_model(id).await.unwrap();
        assert_eq!(row.parameter_count, Some(model.parameter_count as i64));
    }
    app.stop().await;
}

async fn app_store(app: &crate::support::TestApp) -> millm::store::Store {
    millm::store::Store::connect(&app.settings.database_url())
        .await
        .unwrap()
}

async fn delete_of_a_local_model_leaves_its_files_untouched(db: Db) {
    let app = spawn_app(db).await;
    let model = app.write_model("keep-me", TinyLlama::default().sharded(2));
    let before = hash_tree(&model.dir);
    let reply = app.add_local(&model.dir, "FP16").await;
    let id = reply.data()["id"].as_i64().unwrap();

    let reply = app.delete(&format!("/api/models/{id}")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.data()["freed_bytes"], 0);
    assert_eq!(
        hash_tree(&model.dir),
        before,
        "not a byte of the folder changes"
    );
    assert_eq!(
        app.get(&format!("/api/models/{id}")).await.code(),
        "MODEL_NOT_FOUND"
    );
    assert_eq!(
        app.delete(&format!("/api/models/{id}")).await.code(),
        "MODEL_NOT_FOUND"
    );
    app.stop().await;
}

async fn the_same_folder_cannot_be_registered_twice_at_one_quantization(db: Db) {
    let app = spawn_app(db).await;
    let model = app.write_model("dup", TinyLlama::default());
    let first = app.add_local(&model.dir, "Q4").await;
    let id = first.data()["id"].as_i64().unwrap();

    let again = app.add_local(&model.dir, "Q4").await;
    assert_eq!(again.status, 409);
    assert_eq!(again.code(), "MODEL_ALREADY_EXISTS");
    assert_eq!(again.body["error"]["details"]["existing_model_id"], id);

    // At another quantization it is another model, as a Hub repo can be.
    let q8 = app.add_local(&model.dir, "Q8").await;
    assert_eq!(q8.status, 202, "{}", q8.body);
    assert_ne!(q8.data()["id"], id);
    assert_eq!(q8.data()["local_path"], first.data()["local_path"]);

    // A symlink to the same folder is the same folder.
    let link = app.dir.path().join("link-to-dup");
    std::os::unix::fs::symlink(&model.dir, &link).unwrap();
    let via_link = app.add_local(&link, "Q4").await;
    assert_eq!(via_link.code(), "MODEL_ALREADY_EXISTS");
    app.stop().await;
}

async fn models_are_listed_newest_first(db: Db) {
    let app = spawn_app(db).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let model = app.write_model(&format!("m{i}"), TinyLlama::default());
        ids.push(
            app.add_local(&model.dir, "Q4").await.data()["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let list = app.get("/api/models").await;
    let got: Vec<i64> = list
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    ids.reverse();
    assert_eq!(got, ids);
    app.stop().await;
}

async fn custom_names_are_used_and_bounded(db: Db) {
    let app = spawn_app(db).await;
    let model = app.write_model("named", TinyLlama::default());
    let body = json!({"source": "local", "local_path": model.dir, "custom_name": "My Llama"});
    let reply = app.post("/api/models", body).await;
    assert_eq!(reply.data()["name"], "My Llama");
    assert_eq!(reply.data()["quantization"], "Q4", "Q4 is the default");

    let other = app.write_model("named2", TinyLlama::default());
    let body = json!({"source": "local", "local_path": other.dir, "custom_name": "x".repeat(101)});
    let reply = app.post("/api/models", body).await;
    assert_eq!(reply.status, 422);
    assert_eq!(reply.body["error"]["details"]["field"], "custom_name");
    app.stop().await;
}

on_both_databases!(
    local_folder_is_ready_with_exact_parameter_count,
    delete_of_a_local_model_leaves_its_files_untouched,
    the_same_folder_cannot_be_registered_twice_at_one_quantization,
    models_are_listed_newest_first,
    custom_names_are_used_and_bounded,
);
