//! Integration tests: the real server on port 0, real SQLite and PostgreSQL, real files.

mod support;

mod access;
mod downloads;
mod errors;
mod events;
mod inference;
mod limits;
mod list;
mod load;
mod local_models;
mod local_roots;
mod metrics;
mod on_request;
mod openai;
mod openapi;
mod paging;
mod pgproxy;
mod python;
mod registry;
mod smollm;
mod startup;
