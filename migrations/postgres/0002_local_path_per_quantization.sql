-- One local folder may be registered at several quantizations, as a Hub repo can be: the
-- uniqueness of local_path alone becomes uniqueness of (local_path, quantization).
ALTER TABLE models DROP CONSTRAINT models_local_path_key;
ALTER TABLE models ADD CONSTRAINT models_local_path_quantization_key UNIQUE (local_path, quantization);
