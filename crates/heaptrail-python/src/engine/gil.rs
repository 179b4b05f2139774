//! Proof that the calling thread holds the main interpreter's GIL, and state reached only with
//! that proof.
//!
//! The tracer's tables are touched only by the thread that holds the main interpreter's GIL
//! (see `tracer`): the GIL serialises those threads, so the tables take no lock of their own.
//! [`MainGil`] is the proof a caller hands over to reach them; a [`GilCell`] is state that can
//! be reached only with it. A `MainGil` is made in one of three ways, and this file is the
//! one place that argues why each is right:
//! * [`MainGil::from_py`]: a `Python<'py>` token, held by every `#[pyfunction]` and method;
//! * [`MainGil::of_thread`]: the allocator hooks' runtime check ([`CurrentThread::holds_gil`]),
//!   for code that runs inside an allocation and has no `Python<'_>`;
//! * [`MainGil::assume_held`] (unsafe): the one hook that relies on CPython's contract instead
//!   (a MEM/OBJ free of a block with a header, `tracer::forget_headered`).

use crate::engine::frames::CurrentThread;
use pyo3::Python;
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// A zero-sized proof that the calling thread holds the main interpreter's GIL.
///
/// Not `Send` (it stays on the thread that made it, so it cannot enter the closure of
/// `Python::detach`, the safe way to let go of the GIL), and it lives no longer than what it
/// was made from: the `Python<'py>` token, or the borrow of the hook's [`CurrentThread`].
#[derive(Clone, Copy)]
pub struct MainGil<'a>(PhantomData<(&'a (), *mut ())>);

impl<'py> MainGil<'py> {
    /// From PyO3's token: PyO3 hands a `Python<'py>` only to a thread that holds the GIL, and
    /// this extension runs in the main interpreter only (PyO3 refuses to import a module in a
    /// subinterpreter).
    #[inline]
    pub fn from_py(_py: Python<'py>) -> Self {
        MainGil(PhantomData)
    }
}

impl<'a> MainGil<'a> {
    /// From the allocator hooks' runtime check: `Some` when `thread` (the calling thread, as
    /// [`crate::engine::frames::current_thread`] saw it at the top of this hook or call) holds
    /// the main interpreter's GIL.
    ///
    /// Why that is enough: the C shim sets `holds_gil` only when the calling thread's attached
    /// thread state belongs to the main interpreter (3.12+: a thread-local read of the state
    /// this very thread runs with), or, on 3.11, when the main interpreter's GIL holder is this
    /// thread. A `CurrentThread` cannot be made anywhere else (its fields are private to
    /// `frames`) and cannot leave its thread (not `Send`), and no code that holds a token
    /// releases the GIL (hooks never do; API calls only through `Python::detach`, whose
    /// closure cannot take the token).
    #[inline]
    pub fn of_thread(thread: &'a CurrentThread) -> Option<Self> {
        thread.holds_gil().then_some(MainGil(PhantomData))
    }
}

impl MainGil<'_> {
    /// For the MEM/OBJ free hooks, which have neither a `Python<'_>` nor (on their hot path)
    /// a runtime check: CPython requires the GIL for every MEM/OBJ free.
    ///
    /// # Safety
    /// The calling thread holds the main interpreter's GIL for as long as the token is used.
    #[inline]
    pub unsafe fn assume_held() -> Self {
        MainGil(PhantomData)
    }
}

/// State reached only by the main-GIL holder, with a [`MainGil`]: a `RefCell` whose lock is
/// the GIL. A borrow made while another is alive on the same thread (a re-entrant call: code
/// that, while the state is borrowed, calls into Python, which allocates and enters the hooks
/// again) is refused instead of aliasing it.
pub struct GilCell<T> {
    value: UnsafeCell<T>,
    borrowed: UnsafeCell<bool>,
}

// SAFETY: every access to `value` and `borrowed` goes through `borrow_mut`, which takes a
// `MainGil`: only the thread holding the main interpreter's GIL has one, and the GIL lets one
// thread at a time hold it, so the cell is never accessed by two threads at once. (Different
// threads do use it over time: hence `T: Send`.)
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub const fn new(value: T) -> Self {
        GilCell {
            value: UnsafeCell::new(value),
            borrowed: UnsafeCell::new(false),
        }
    }

    /// The value, borrowed until the guard is dropped; `None` if it is borrowed already (by
    /// a caller further up this thread's stack).
    #[inline]
    pub fn borrow_mut<'g>(&'g self, _gil: MainGil<'g>) -> Option<GilRefMut<'g, T>> {
        // SAFETY: the token proves the calling thread holds the main GIL, which serialises
        // every access to this cell (see the `Sync` impl); `borrowed` is a plain flag no
        // reference to which outlives this statement.
        let borrowed = unsafe { &mut *self.borrowed.get() };
        if *borrowed {
            return None;
        }
        *borrowed = true;
        // SAFETY: as above, and `borrowed` was false: no other reference to the value is
        // alive, and none will be made until the guard clears the flag.
        let value = unsafe { &mut *self.value.get() };
        Some(GilRefMut {
            value,
            borrowed: &self.borrowed,
            _gil: PhantomData,
        })
    }
}

/// A [`GilCell`]'s value, borrowed (see [`GilCell::borrow_mut`]).
pub struct GilRefMut<'g, T> {
    value: &'g mut T,
    borrowed: &'g UnsafeCell<bool>,
    _gil: PhantomData<MainGil<'g>>,
}

impl<T> Deref for GilRefMut<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T> DerefMut for GilRefMut<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        self.value
    }
}

impl<T> Drop for GilRefMut<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: this guard's thread still holds the main GIL (the guard is not `Send` and
        // lives no longer than the token it was made with); the flag is only ever read and
        // written under that GIL, through no lasting reference.
        unsafe { *self.borrowed.get() = false };
    }
}
