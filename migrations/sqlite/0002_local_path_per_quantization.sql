-- One local folder may be registered at several quantizations, as a Hub repo can be: the
-- uniqueness of local_path alone becomes uniqueness of (local_path, quantization). SQLite
-- cannot drop a column constraint, so the table is rebuilt with every row and id kept.
CREATE TABLE models_next (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('huggingface', 'local')),
    repo_id TEXT,
    revision TEXT,
    requested_revision TEXT,
    local_path TEXT,
    params TEXT,
    architecture TEXT,
    quantization TEXT NOT NULL CHECK (quantization IN ('FP32', 'FP16', 'Q8', 'Q4', 'Q2')),
    disk_size_mb BIGINT,
    estimated_memory_mb BIGINT,
    status TEXT NOT NULL CHECK (status IN ('downloading', 'ready', 'loading', 'loaded', 'error')),
    error_message TEXT,
    cache_path TEXT,
    config_json TEXT,
    files_json TEXT,
    parameter_count BIGINT,
    trust_remote_code BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    loaded_at TEXT,
    UNIQUE (repo_id, quantization),
    UNIQUE (local_path, quantization)
);
INSERT INTO models_next (id, name, source, repo_id, revision, requested_revision, local_path,
    params, architecture, quantization, disk_size_mb, estimated_memory_mb, status, error_message,
    cache_path, config_json, files_json, parameter_count, trust_remote_code, created_at, updated_at,
    loaded_at)
SELECT id, name, source, repo_id, revision, requested_revision, local_path, params, architecture,
    quantization, disk_size_mb, estimated_memory_mb, status, error_message, cache_path, config_json,
    files_json, parameter_count, trust_remote_code, created_at, updated_at, loaded_at
FROM models;
DROP TABLE models;
ALTER TABLE models_next RENAME TO models;
CREATE INDEX models_status ON models (status);
