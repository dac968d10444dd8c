//! What the health endpoints report: the database within a bound, the backend, the loaded
//! model and the device's memory.

use std::time::Duration;

use crate::engine::DeviceInfo;

use super::Services;

impl Services {
    /// True when the database answers a trivial query within `within`.
    pub async fn database_ready(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.inner.store.ping())
            .await
            .unwrap_or(false)
    }

    /// `sqlite` or `postgresql`.
    pub fn database_backend(&self) -> &'static str {
        self.inner.store.backend().as_str()
    }

    /// The model the engine holds now, if any.
    pub fn loaded_model_id(&self) -> Option<i64> {
        self.inner.engine.facts().loaded.map(|l| l.model_id)
    }

    /// What the engine holds now.
    pub fn loaded(&self) -> Option<crate::engine::LoadedFacts> {
        self.inner.engine.facts().loaded
    }

    /// The device models load onto, with its memory now.
    pub async fn device_memory(&self) -> DeviceInfo {
        self.inner.devices.read().await
    }
}
