//! The one place the crate takes its atomics and cells from, so that the
//! loom model checker can replace them (`--cfg loom`).
//!
//! The cell mirrors loom's `UnsafeCell` API (`get` / `get_mut` returning
//! tracked pointers), so under loom every read of a set by a reader and every
//! edit by the writer is checked for overlap.

#[cfg(loom)]
pub(crate) use loom::cell::{ConstPtr, MutPtr, UnsafeCell};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) use cell::{ConstPtr, MutPtr, UnsafeCell};
#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

#[cfg(not(loom))]
mod cell {
    /// `core::cell::UnsafeCell` with loom's pointer-returning API.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(core::cell::UnsafeCell::new(value))
        }

        #[inline(always)]
        pub(crate) fn get(&self) -> ConstPtr<T> {
            ConstPtr(self.0.get())
        }

        pub(crate) fn get_mut(&self) -> MutPtr<T> {
            MutPtr(self.0.get())
        }
    }

    /// A shared access to the cell's contents.
    #[derive(Debug)]
    pub(crate) struct ConstPtr<T>(*const T);

    impl<T> ConstPtr<T> {
        /// # Safety
        /// No `MutPtr` of the same cell may be dereferenced while the returned
        /// reference lives.
        #[inline(always)]
        pub(crate) unsafe fn deref(&self) -> &T {
            // SAFETY: the pointer comes from a live `UnsafeCell`; the caller
            // rules out concurrent mutation.
            unsafe { &*self.0 }
        }
    }

    /// An exclusive access to the cell's contents.
    #[derive(Debug)]
    pub(crate) struct MutPtr<T>(*mut T);

    impl<T> MutPtr<T> {
        /// # Safety
        /// No other reference to the cell's contents may exist while the
        /// returned reference lives.
        #[allow(clippy::mut_from_ref)]
        pub(crate) unsafe fn deref(&self) -> &mut T {
            // SAFETY: the pointer comes from a live `UnsafeCell`; the caller
            // guarantees exclusivity.
            unsafe { &mut *self.0 }
        }
    }
}

/// Under loom, a yield, so the model checker knows the thread waits for
/// another (a spinning wait would otherwise explore no progress); returns
/// whether it yielded. Without loom it does nothing and returns false, and
/// the caller pauses its own way.
#[inline]
pub(crate) fn model_yield() -> bool {
    #[cfg(loom)]
    loom::thread::yield_now();
    cfg!(loom)
}

/// A number unique to the calling thread among live threads (the address of
/// a thread-local), or 0 where threads cannot be told apart (`no_std`).
#[inline]
pub(crate) fn thread_token() -> usize {
    #[cfg(loom)]
    {
        loom::thread_local! { static TOKEN: u8 = 0; }
        TOKEN.with(|token| token as *const u8 as usize)
    }
    #[cfg(all(not(loom), feature = "std"))]
    {
        std::thread_local! { static TOKEN: u8 = const { 0 }; }
        TOKEN.with(|token| token as *const u8 as usize)
    }
    #[cfg(all(not(loom), not(feature = "std")))]
    0
}
