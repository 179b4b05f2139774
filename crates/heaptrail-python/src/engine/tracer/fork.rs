//! Fork safety of the queue of operations made without the GIL.

use super::PENDING;
use parking_lot::lock_api::RawMutex as _;
use std::sync::Once;

/// The pending queue's lock is taken around `fork()` so the child never inherits it held by
/// a thread that does not exist there. (The GIL-guarded tables need nothing: `os.fork()`
/// runs with the GIL held.)
pub(super) fn register_fork_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        extern "C" fn prepare() {
            // SAFETY: paired with the unlock in `after`, on the same thread.
            unsafe { PENDING.raw().lock() };
        }
        extern "C" fn after() {
            // SAFETY: `prepare` locked it on this thread (the child has only this thread).
            unsafe { PENDING.force_unlock() };
        }
        // SAFETY: registering plain functions that only touch our own static.
        unsafe { libc::pthread_atfork(Some(prepare), Some(after), Some(after)) };
    });
}
