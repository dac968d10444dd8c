//! The engine task: the one owner of the loaded model. Callers send it requests over a channel
//! and get their answers over oneshot channels, as TEI and TGI route work to their backends:
//! reserve and run a load, unload, take a lease. What is loaded is published on a watch channel,
//! so that views read it without a round trip.
//!
//! Loads and unloads run one at a time, in the order asked. Leases are answered at once, even
//! while an unload waits for leases to end: an unload takes the model out of reach first (new
//! leases are refused), gives the current ones up to the graceful timeout to end, then revokes
//! them. At shutdown the task cancels a running load and waits for it to stop.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::infer::TextModel;
use super::loader::{load_blocking, LoadRequest, LoadedModel};
use super::EngineError;

/// Where a model's text side comes from: its folder (config, tokenizer, chat template) and
/// the context the server allows.
#[derive(Debug, Clone)]
pub struct TextSource {
    pub folder: std::path::PathBuf,
    pub max_context: usize,
}

/// Whether the loaded model can generate: its text side, or the sentence saying why not.
pub type TextSupport = Result<Arc<TextModel>, String>;

/// What the engine holds, as views show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineFacts {
    /// The loaded model, while it can be leased.
    pub loaded: Option<LoadedFacts>,
    /// The model a load is reserved or running for.
    pub loading: Option<i64>,
}

/// What the loaded model holds, shown only while it is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedFacts {
    pub model_id: i64,
    pub num_parameters: u64,
    pub memory_footprint: u64,
    pub device: String,
    pub dtype: String,
    /// Locked: a load of another model (asked or on request) is refused until an unload.
    pub locked: bool,
    /// Since when nobody holds a lease on it; `None` while a lease is held.
    pub idle_since: Option<SystemTime>,
}

/// Why a load cannot be reserved now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Another load is reserved or running (for this model id).
    Busy(i64),
    /// The loaded model (this id) is locked.
    Locked(i64),
}

/// Why a lock cannot be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockRefusal {
    /// The model is not the loaded one.
    NotLoaded,
    /// Another model (this id) is loaded and locked.
    LockedOther(i64),
}

/// What an unload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unloaded {
    pub model_id: i64,
    /// Leases still held when the timeout ran out (revoked).
    pub revoked_leases: usize,
}

/// What a running load reports before its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadUpdate {
    /// The model loaded before was unloaded to make room.
    Unloaded(Unloaded),
    /// A stage and its percent.
    Progress { stage: String, progress: u8 },
}

/// A load under way: its updates, then its result.
pub struct LoadJob {
    pub updates: mpsc::UnboundedReceiver<LoadUpdate>,
    pub done: oneshot::Receiver<Result<LoadedFacts, EngineError>>,
}

/// The right to run the one load. Dropped without [`LoadTicket::start`], it frees the slot.
pub struct LoadTicket {
    model_id: i64,
    tx: mpsc::UnboundedSender<Command>,
    started: bool,
}

impl LoadTicket {
    /// Runs the load: the loaded model (if any) is unloaded first, waiting up to
    /// `unload_timeout` for its leases; then the weights, then the text side from `text`.
    pub fn start(
        mut self,
        request: LoadRequest,
        text: TextSource,
        unload_timeout: Duration,
    ) -> LoadJob {
        self.started = true;
        let (updates_tx, updates) = mpsc::unbounded_channel();
        let (done_tx, done) = oneshot::channel();
        let sent = self.tx.send(Command::Run(Op::Load {
            model_id: self.model_id,
            request,
            text,
            unload_timeout,
            updates: updates_tx,
            done: done_tx,
        }));
        if let Err(mpsc::error::SendError(Command::Run(Op::Load { done, .. }))) = sent {
            let _ = done.send(Err(EngineError::Cancelled));
        }
        LoadJob { updates, done }
    }
}

impl Drop for LoadTicket {
    fn drop(&mut self) {
        if !self.started {
            let _ = self.tx.send(Command::Release);
        }
    }
}

#[derive(Default)]
struct LeaseCount {
    active: AtomicUsize,
    released: Notify,
}

/// A hold on the loaded model. While any lease is alive an unload waits (up to
/// `GRACEFUL_UNLOAD_TIMEOUT`); after that the lease is revoked and its holder must stop.
pub struct Lease {
    model_id: i64,
    model: Arc<LoadedModel>,
    text: TextSupport,
    revoked: CancellationToken,
    count: Arc<LeaseCount>,
    /// Tells the task when the last lease ends (the model's idle time starts).
    tx: mpsc::UnboundedSender<Command>,
}

impl Lease {
    pub fn model_id(&self) -> i64 {
        self.model_id
    }
    pub fn model(&self) -> &LoadedModel {
        &self.model
    }
    /// The text side, or why this model cannot generate.
    pub fn text(&self) -> Result<&Arc<TextModel>, &str> {
        self.text.as_ref().map_err(String::as_str)
    }
    /// True once an unload has given up waiting: stop using the model and drop the lease.
    pub fn is_revoked(&self) -> bool {
        self.revoked.is_cancelled()
    }
    /// Resolves when the lease is revoked.
    pub async fn revoked(&self) {
        self.revoked.cancelled().await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.count.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.count.released.notify_waiters();
            let _ = self.tx.send(Command::Idle {
                model_id: self.model_id,
            });
        }
    }
}

/// The handle callers hold; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::UnboundedSender<Command>,
    facts: watch::Receiver<EngineFacts>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Engine {
    /// Starts the engine task; it stops (after a running load) when `shutdown` is cancelled.
    pub fn spawn(shutdown: CancellationToken) -> Engine {
        let (tx, rx) = mpsc::unbounded_channel();
        let (facts_tx, facts) = watch::channel(EngineFacts::default());
        let actor = Actor {
            tx: tx.clone(),
            slot: None,
            reserved: None,
            queue: VecDeque::new(),
            facts: facts_tx,
            shutdown,
        };
        let task = tokio::spawn(actor.run(rx));
        Engine {
            tx,
            facts,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// What is loaded (and loading) now.
    pub fn facts(&self) -> EngineFacts {
        self.facts.borrow().clone()
    }

    /// Claims the one load for `model_id`; refused while another load is reserved or running,
    /// or while another model is loaded and locked.
    pub async fn reserve_load(&self, model_id: i64) -> Result<LoadTicket, Refusal> {
        let (reply, answer) = oneshot::channel();
        let stopped = Refusal::Busy(model_id);
        self.tx
            .send(Command::Reserve { model_id, reply })
            .map_err(|_| stopped)?;
        answer.await.map_err(|_| stopped)??;
        Ok(LoadTicket {
            model_id,
            tx: self.tx.clone(),
            started: false,
        })
    }

    /// Locks the loaded model if it is `model_id` (until its unload).
    pub async fn lock(&self, model_id: i64) -> Result<(), LockRefusal> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Lock { model_id, reply })
            .map_err(|_| LockRefusal::NotLoaded)?;
        answer.await.map_err(|_| LockRefusal::NotLoaded)?
    }

    /// Unlocks `model_id` if it is loaded and locked; otherwise nothing.
    pub async fn unlock(&self, model_id: i64) {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Command::Unlock { model_id, reply }).is_ok() {
            let _ = answer.await;
        }
    }

    /// Unloads `model_id` if, when its turn comes, it is loaded, unlocked and nobody has held a
    /// lease on it for `idle` or more. `None` when it was not unloaded.
    pub async fn unload_if_idle(&self, model_id: i64, idle: Duration) -> Option<Unloaded> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Run(Op::UnloadIfIdle {
                model_id,
                idle,
                reply,
            }))
            .ok()?;
        answer.await.ok()?
    }

    /// A receiver of the facts, to wait for their changes.
    pub fn watch_facts(&self) -> watch::Receiver<EngineFacts> {
        self.facts.clone()
    }

    /// Unloads the loaded model (if it is `model_id`, or any when `None`), after the loads and
    /// unloads asked before it. `None` when that model is not loaded.
    pub async fn unload(&self, model_id: Option<i64>, timeout: Duration) -> Option<Unloaded> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Run(Op::Unload {
                model_id,
                timeout,
                reply,
            }))
            .ok()?;
        answer.await.ok()?
    }

    /// A lease on the loaded model if it is `model_id` (or any model when `None`).
    pub async fn lease(&self, model_id: Option<i64>) -> Option<Lease> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::Lease { model_id, reply }).ok()?;
        answer.await.ok()?
    }

    /// Waits for the task to end (after the shutdown token is cancelled), at most `limit`.
    pub async fn join(&self, limit: Duration) {
        let task = crate::sync::lock(&self.task).take();
        if let Some(task) = task {
            if tokio::time::timeout(limit, task).await.is_err() {
                tracing::warn!("the engine did not stop in time");
            }
        }
    }
}

enum Command {
    Reserve {
        model_id: i64,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    Release,
    Lock {
        model_id: i64,
        reply: oneshot::Sender<Result<(), LockRefusal>>,
    },
    Unlock {
        model_id: i64,
        reply: oneshot::Sender<()>,
    },
    /// The last lease on `model_id` ended.
    Idle {
        model_id: i64,
    },
    Lease {
        model_id: Option<i64>,
        reply: oneshot::Sender<Option<Lease>>,
    },
    /// A load or an unload, run after those asked before it.
    Run(Op),
}

enum Op {
    Load {
        model_id: i64,
        request: LoadRequest,
        text: TextSource,
        unload_timeout: Duration,
        updates: mpsc::UnboundedSender<LoadUpdate>,
        done: oneshot::Sender<Result<LoadedFacts, EngineError>>,
    },
    Unload {
        model_id: Option<i64>,
        timeout: Duration,
        reply: oneshot::Sender<Option<Unloaded>>,
    },
    UnloadIfIdle {
        model_id: i64,
        idle: Duration,
        reply: oneshot::Sender<Option<Unloaded>>,
    },
}

/// The loaded model and what tracks its leases.
struct Slot {
    model_id: i64,
    model: Arc<LoadedModel>,
    text: TextSupport,
    revoke: CancellationToken,
    leases: Arc<LeaseCount>,
    locked: bool,
    /// Since when no lease is held.
    idle_since: Option<SystemTime>,
}

impl Slot {
    fn new(model_id: i64, model: LoadedModel, text: TextSupport) -> Slot {
        Slot {
            model_id,
            model: Arc::new(model),
            text,
            revoke: CancellationToken::new(),
            leases: Arc::new(LeaseCount::default()),
            locked: false,
            idle_since: Some(SystemTime::now()),
        }
    }

    fn facts(&self) -> LoadedFacts {
        LoadedFacts {
            model_id: self.model_id,
            num_parameters: self.model.num_parameters,
            memory_footprint: self.model.footprint_bytes,
            device: self.model.device_name.clone(),
            dtype: self.model.dtype.clone(),
            locked: self.locked,
            idle_since: self.idle_since,
        }
    }
}

/// How a load or an unload ended, back in the task.
enum OpDone {
    Loaded {
        model_id: i64,
        result: Result<(LoadedModel, TextSupport), EngineError>,
        done: oneshot::Sender<Result<LoadedFacts, EngineError>>,
    },
    Unloaded,
}

struct Actor {
    /// For the leases it hands out (they report their end).
    tx: mpsc::UnboundedSender<Command>,
    slot: Option<Slot>,
    /// The model whose load is reserved or running.
    reserved: Option<i64>,
    /// Loads and unloads waiting for the one running.
    queue: VecDeque<Op>,
    facts: watch::Sender<EngineFacts>,
    shutdown: CancellationToken,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut running: Option<BoxFuture<'static, OpDone>> = None;
        let mut stopping = false;
        loop {
            if running.is_none() && !stopping {
                if let Some(next) = self.queue.pop_front() {
                    running = Some(self.start(next));
                }
            }
            if stopping && running.is_none() {
                break;
            }
            tokio::select! {
                biased;
                done = poll_running(&mut running) => {
                    running = None;
                    self.finish(done);
                }
                _ = self.shutdown.cancelled(), if !stopping => stopping = true,
                command = rx.recv(), if !stopping => match command {
                    Some(command) => self.handle(command),
                    None => stopping = true,
                },
            }
        }
        // Whatever still waits is answered; the model is dropped with the task.
        for op in self.queue.drain(..) {
            if let Op::Load { done, .. } = op {
                let _ = done.send(Err(EngineError::Cancelled));
            }
        }
        self.slot = None;
        self.reserved = None;
        self.publish();
        release_freed_memory();
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Reserve { model_id, reply } => {
                let answer = match (self.reserved, &self.slot) {
                    (Some(other), _) => Err(Refusal::Busy(other)),
                    (None, Some(s)) if s.locked && s.model_id != model_id => {
                        Err(Refusal::Locked(s.model_id))
                    }
                    _ => Ok(()),
                };
                if answer.is_ok() {
                    self.reserved = Some(model_id);
                    self.publish();
                }
                let _ = reply.send(answer);
            }
            Command::Release => {
                self.reserved = None;
                self.publish();
            }
            Command::Lock { model_id, reply } => {
                let answer = match &mut self.slot {
                    Some(s) if s.model_id == model_id => {
                        s.locked = true;
                        Ok(())
                    }
                    Some(s) if s.locked => Err(LockRefusal::LockedOther(s.model_id)),
                    _ => Err(LockRefusal::NotLoaded),
                };
                self.publish();
                let _ = reply.send(answer);
            }
            Command::Unlock { model_id, reply } => {
                if let Some(s) = self.slot.as_mut().filter(|s| s.model_id == model_id) {
                    s.locked = false;
                    self.publish();
                }
                let _ = reply.send(());
            }
            Command::Idle { model_id } => {
                if let Some(s) = self.slot.as_mut().filter(|s| s.model_id == model_id) {
                    if s.leases.active.load(Ordering::Acquire) == 0 && s.idle_since.is_none() {
                        s.idle_since = Some(SystemTime::now());
                        self.publish();
                    }
                }
            }
            Command::Lease { model_id, reply } => {
                let lease = self.lease(model_id);
                if lease.is_some() {
                    self.publish();
                }
                let _ = reply.send(lease);
            }
            Command::Run(op) => self.queue.push_back(op),
        }
    }

    fn lease(&mut self, model_id: Option<i64>) -> Option<Lease> {
        let s = self.slot.as_mut()?;
        if model_id.is_some_and(|id| id != s.model_id) {
            return None;
        }
        s.leases.active.fetch_add(1, Ordering::AcqRel);
        s.idle_since = None;
        Some(Lease {
            model_id: s.model_id,
            model: s.model.clone(),
            text: s.text.clone(),
            revoked: s.revoke.child_token(),
            count: s.leases.clone(),
            tx: self.tx.clone(),
        })
    }

    /// Starts a queued load or unload; the model leaves reach (no new leases) at once.
    fn start(&mut self, op: Op) -> BoxFuture<'static, OpDone> {
        match op {
            Op::Unload {
                model_id,
                timeout,
                reply,
            } => {
                let slot = match &self.slot {
                    Some(s) if model_id.is_none_or(|id| id == s.model_id) => self.slot.take(),
                    _ => None,
                };
                self.publish();
                async move {
                    let unloaded = match slot {
                        Some(slot) => Some(drain(slot, timeout).await),
                        None => None,
                    };
                    let _ = reply.send(unloaded);
                    OpDone::Unloaded
                }
                .boxed()
            }
            Op::UnloadIfIdle {
                model_id,
                idle,
                reply,
            } => {
                let idle_enough = self.slot.as_ref().is_some_and(|s| {
                    s.model_id == model_id
                        && !s.locked
                        && s.leases.active.load(Ordering::Acquire) == 0
                        && s.idle_since
                            .is_some_and(|at| at.elapsed().is_ok_and(|e| e >= idle))
                });
                let slot = if idle_enough { self.slot.take() } else { None };
                self.publish();
                async move {
                    let unloaded = match slot {
                        Some(slot) => Some(drain(slot, Duration::ZERO).await),
                        None => None,
                    };
                    let _ = reply.send(unloaded);
                    OpDone::Unloaded
                }
                .boxed()
            }
            Op::Load {
                model_id,
                request,
                text,
                unload_timeout,
                updates,
                done,
            } => {
                let previous = self.slot.take();
                self.publish();
                let cancel = self.shutdown.child_token();
                async move {
                    if let Some(previous) = previous {
                        let unloaded = drain(previous, unload_timeout).await;
                        let _ = updates.send(LoadUpdate::Unloaded(unloaded));
                    }
                    let result = if cancel.is_cancelled() {
                        Err(EngineError::Cancelled)
                    } else {
                        let progress = updates.clone();
                        tokio::task::spawn_blocking(move || {
                            let report = move |stage: &str, progress_pct: u8| {
                                let _ = progress.send(LoadUpdate::Progress {
                                    stage: stage.to_string(),
                                    progress: progress_pct,
                                });
                            };
                            let mut model = load_blocking(&request, &cancel, &report)?;
                            let text = TextModel::build(&mut model, &text.folder, text.max_context)
                                .map(Arc::new)
                                .map_err(|e| e.to_string());
                            Ok((model, text))
                        })
                        .await
                        .unwrap_or_else(|e| {
                            Err(EngineError::BadCheckpoint(format!(
                                "the loader stopped unexpectedly: {e}"
                            )))
                        })
                    };
                    drop(updates);
                    OpDone::Loaded {
                        model_id,
                        result,
                        done,
                    }
                }
                .boxed()
            }
        }
    }

    fn finish(&mut self, done: OpDone) {
        match done {
            OpDone::Unloaded => {}
            OpDone::Loaded {
                model_id,
                result,
                done,
            } => {
                self.reserved = None;
                let answer = result.map(|(model, text)| {
                    let slot = Slot::new(model_id, model, text);
                    let facts = slot.facts();
                    self.slot = Some(slot);
                    facts
                });
                if answer.is_err() {
                    release_freed_memory();
                }
                self.publish();
                if let Err(Ok(_)) = done.send(answer) {
                    // Nobody waits for this load any more (shutdown): do not keep its memory.
                    self.slot = None;
                    self.publish();
                    release_freed_memory();
                }
            }
        }
    }

    fn publish(&self) {
        let loaded = self.slot.as_ref().map(Slot::facts);
        self.facts.send_if_modified(|f| {
            let next = EngineFacts {
                loaded,
                loading: self.reserved,
            };
            let changed = *f != next;
            *f = next;
            changed
        });
    }
}

/// The running operation's result; never resolves when there is none.
async fn poll_running(running: &mut Option<BoxFuture<'static, OpDone>>) -> OpDone {
    match running {
        Some(op) => op.await,
        None => std::future::pending().await,
    }
}

/// Waits up to `timeout` for the slot's leases to end, revokes what is left, and frees it.
async fn drain(slot: Slot, timeout: Duration) -> Unloaded {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = slot.leases.released.notified();
        if slot.leases.active.load(Ordering::Acquire) == 0 {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            break;
        }
    }
    let revoked_leases = slot.leases.active.load(Ordering::Acquire);
    slot.revoke.cancel();
    let model_id = slot.model_id;
    drop(slot);
    release_freed_memory();
    Unloaded {
        model_id,
        revoked_leases,
    }
}

/// Gives freed heap pages back to the OS, so an unload really lowers the process's memory.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
