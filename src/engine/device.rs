//! The device models load onto and its memory: an NVIDIA GPU through NVML (loaded at run time;
//! no driver means CPU only, not an error), else system memory from the OS.

use std::sync::{Arc, Mutex};

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::Nvml;
use sysinfo::{MemoryRefreshKind, RefreshKind, System};

/// Fixes the number of CPU threads candle and rayon use (`RAYON_NUM_THREADS`, when not set
/// already) to the count candle picks for this machine. Call it first thing, before any
/// thread starts: setting the environment is only sound while the process has one thread.
/// Without it, candle works the count out again for many parallel tensor operations, and on
/// Linux each time means reading `/proc/cpuinfo` (362 times in one Q8 row of the generate
/// bench).
pub fn pin_cpu_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

/// Runs `f` on a rayon pool of one thread: what decoding one token on the CPU runs in.
///
/// A token's quantized matmuls split across candle's own barrier pool (every core) whichever
/// rayon pool calls them; the rest of the token is ~15 small operations per layer on vectors
/// of a few thousand values, too small to gain from splitting. Run in candle's pool of as many
/// threads as cores, rayon split them anyway, and its idle workers spun on the same cores
/// as the matmul workers: with one thread the Q8 decode of SmolLM2-135M went from 76–88 to
/// 96–101 tokens/s on 2 cores (300 tokens, alternated runs). Dense 16- and 32-bit layers
/// split their one-row products over the barrier pool too (gemm's matrix-vector product is
/// single-threaded whatever the rayon pool). Prefill, where the operations are wide, stays in
/// candle's pool. Should the system refuse the pool its thread, `f` runs on the calling thread
/// (slower, never an error).
pub fn on_one_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "millm-decode".into())
            .build()
            .map_err(|e| tracing::warn!("no decode thread ({e}); decoding on the caller's"))
            .ok()
    });
    match pool {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

/// Live figures of the GPU, as the original's `system:metrics` sends them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuStats {
    pub utilization: u32,
    pub memory_used_mb: u64,
    pub memory_total_mb: u64,
    pub temperature: u32,
}

/// The device models load onto, with its memory now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `cpu` or `cuda:0`.
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Present when an NVIDIA GPU is visible, whether or not models load onto it.
    pub gpu: Option<GpuStats>,
}

impl DeviceInfo {
    pub fn is_gpu(&self) -> bool {
        self.name.starts_with("cuda")
    }
}

/// Knows which device loads go to and reads its memory.
#[derive(Clone)]
pub struct Devices {
    nvml: Option<Arc<Nvml>>,
    system: Arc<Mutex<System>>,
    use_cuda: bool,
}

impl std::fmt::Debug for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devices")
            .field("nvml", &self.nvml.is_some())
            .field("use_cuda", &self.use_cuda)
            .finish()
    }
}

impl Devices {
    /// Looks for an NVIDIA GPU. Models go to it only when this binary was built with the
    /// `cuda` feature; otherwise (or with no driver) they go to the CPU.
    pub fn probe() -> Self {
        let nvml = match Nvml::init() {
            Ok(nvml) if nvml.device_count().map(|n| n > 0).unwrap_or(false) => Some(Arc::new(nvml)),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!("no NVIDIA driver found ({e}); loading on the CPU");
                None
            }
        };
        let use_cuda = cfg!(feature = "cuda") && nvml.is_some();
        Devices {
            nvml,
            system: Arc::new(Mutex::new(System::new_with_specifics(
                RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
            ))),
            use_cuda,
        }
    }

    /// A CPU-only view, whatever the machine has.
    pub fn cpu_only() -> Self {
        let mut d = Self::probe();
        d.use_cuda = false;
        d
    }

    /// True when loads go to the GPU.
    pub fn uses_gpu(&self) -> bool {
        self.use_cuda
    }

    fn gpu_stats(&self) -> Option<(GpuStats, u64, u64)> {
        let nvml = self.nvml.as_ref()?;
        let dev = nvml.device_by_index(0).ok()?;
        let mem = dev.memory_info().ok()?;
        let util = dev.utilization_rates().map(|u| u.gpu).unwrap_or(0);
        let temp = dev.temperature(TemperatureSensor::Gpu).unwrap_or(0);
        Some((
            GpuStats {
                utilization: util,
                memory_used_mb: mem.used >> 20,
                memory_total_mb: mem.total >> 20,
                temperature: temp,
            },
            mem.total,
            mem.free,
        ))
    }

    /// System memory: (total, available) bytes.
    pub fn system_memory(&self) -> (u64, u64) {
        let mut sys = crate::sync::lock(&self.system);
        sys.refresh_memory();
        (sys.total_memory(), sys.available_memory())
    }

    /// The load device and its memory now.
    pub fn current(&self) -> DeviceInfo {
        let gpu = self.gpu_stats();
        if self.use_cuda {
            if let Some((stats, total, free)) = gpu {
                return DeviceInfo {
                    name: "cuda:0".into(),
                    total_bytes: total,
                    free_bytes: free,
                    gpu: Some(stats),
                };
            }
        }
        let (total, free) = self.system_memory();
        DeviceInfo {
            name: "cpu".into(),
            total_bytes: total,
            free_bytes: free,
            gpu: gpu.map(|g| g.0),
        }
    }

    /// [`Devices::current`] on a blocking thread (NVML and `/proc` reads block). Should that
    /// thread fail, the device is reported with no memory rather than failing the caller.
    pub async fn read(&self) -> DeviceInfo {
        let devices = self.clone();
        let fallback = DeviceInfo {
            name: if self.use_cuda { "cuda:0" } else { "cpu" }.into(),
            total_bytes: 0,
            free_bytes: 0,
            gpu: None,
        };
        tokio::task::spawn_blocking(move || devices.current())
            .await
            .unwrap_or(fallback)
    }
}
