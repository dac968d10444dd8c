//! miLLM: a self-hosted server that finds, downloads, loads and unloads large language models.

/// HTTP routes, the envelope, extractors and the OpenAPI document.
pub mod api;
/// Building the application: registry, devices, events, routes, listener.
pub mod app;
/// The command line: `serve` and the client subcommands.
pub mod cli;
/// Settings from flags, environment and `.env`.
pub mod config;
/// Newtypes parsed at the edge: ids, repo ids, quantizations, statuses.
pub mod domain;
/// Devices, safetensors inspection, estimates, loading and quantization.
pub mod engine;
/// The one error type and its envelope.
pub mod error;
/// Socket.IO events.
pub mod events;
/// The Hub protocol, the cache layout and the resumable downloader.
pub mod hub;
/// Prometheus metrics: the registry, the HTTP middleware and the text served at `/metrics`.
pub mod metrics;
/// The lifecycle rules that tie store, Hub, engine and events together.
pub mod service;
/// The model registry on SQLite or PostgreSQL.
pub mod store;
/// The poisoned-lock rule, once.
pub mod sync;
/// The embedded web UI.
pub mod web;
