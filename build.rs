//! Builds the web UI (`web/dist`) when it is missing or older than its sources, so that
//! `cargo run -- serve` embeds a current page. Without npm the binary gets a placeholder page
//! and a build warning. `MILLM_SKIP_WEB_BUILD=1` skips the npm step.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

const SOURCES: &[&str] = &[
    "web/src",
    "web/index.html",
    "web/package.json",
    "web/package-lock.json",
    "web/vite.config.ts",
    "web/tsconfig.json",
    "web/public",
];

fn newest(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    let mut best = meta.modified().ok();
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).ok()?.flatten() {
            if let Some(t) = newest(&entry.path()) {
                best = Some(best.map_or(t, |b| b.max(t)));
            }
        }
    }
    best
}

fn placeholder(dist: &Path, why: &str) {
    let index = dist.join("index.html");
    if !index.exists() {
        let _ = std::fs::create_dir_all(dist);
        let _ = std::fs::write(
            &index,
            format!("<!doctype html><meta charset=\"utf-8\"><title>miLLM</title><p>The web UI was not built: {why}. Install Node.js and npm and rebuild; the API is at <a href=\"/docs\">/docs</a>.</p>"),
        );
    }
    println!("cargo:warning=web UI not built: {why}");
}

fn npm(web: &Path, args: &[&str]) -> bool {
    Command::new("npm")
        .args(args)
        .current_dir(web)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    for s in SOURCES {
        println!("cargo:rerun-if-changed={s}");
    }
    println!("cargo:rerun-if-env-changed=MILLM_SKIP_WEB_BUILD");
    let web = root.join("web");
    let dist = web.join("dist");
    if !web.join("package.json").exists() {
        placeholder(&dist, "web/package.json is missing");
        return;
    }
    let built = newest(&dist.join("index.html"));
    let sources = SOURCES.iter().filter_map(|s| newest(&root.join(s))).max();
    let fresh = matches!((built, sources), (Some(b), Some(s)) if b >= s);
    if fresh {
        return;
    }
    if std::env::var_os("MILLM_SKIP_WEB_BUILD").is_some() {
        placeholder(&dist, "MILLM_SKIP_WEB_BUILD is set");
        return;
    }
    if Command::new("npm").arg("--version").output().is_err() {
        placeholder(&dist, "npm was not found");
        return;
    }
    if !web.join("node_modules").exists() && !npm(&web, &["ci", "--no-audit", "--no-fund"]) {
        placeholder(&dist, "npm ci failed");
        return;
    }
    if !npm(&web, &["run", "build"]) {
        panic!("the web UI failed to build: run `npm run build` in web/ to see why");
    }
}
