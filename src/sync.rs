//! The one poisoned-lock rule: the data behind every `std::sync::Mutex` here (maps of jobs,
//! figures, reorder buffers) stays valid if a holder panicked, so a poisoned lock is used as is
//! rather than spreading the panic to every later caller.

use std::sync::{Condvar, Mutex, MutexGuard};

/// Locks `m`, recovering the guard of a poisoned lock.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits on `cv` with `guard`, recovering the guard of a poisoned lock.
pub fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard)
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
