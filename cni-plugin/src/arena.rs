//! The plugin's memory allocator: one invocation, then exit.
//!
//! A plugin process lives for one request: it parses a configuration, asks netd, prints a
//! result and exits, and the kernel takes all its memory back at once. musl's allocator spent
//! a fifth of an ADD's CPU time on `mmap`/`munmap` calls for memory the process was about to
//! give up anyway (0.35 → 0.27 ms of CPU per ADD with this arena, docs/benchmarks.md). The
//! arena hands out memory from a static buffer and never reuses it; what does not fit (a
//! configuration of several hundred kilobytes) comes from the system allocator as before.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bump allocator over `N` bytes of its own, falling back to [`System`] when they run out.
/// Freeing arena memory does nothing, except that the last block handed out can grow in place.
#[repr(C, align(4096))]
pub struct Arena<const N: usize> {
    buf: UnsafeCell<[u8; N]>,
    /// Offset of the first free byte of `buf`.
    next: AtomicUsize,
}

// SAFETY: every byte of `buf` is handed out to one caller only: `next` is advanced by an atomic
// compare-and-swap before the block is returned, so concurrent callers get disjoint blocks.
unsafe impl<const N: usize> Sync for Arena<N> {}

impl<const N: usize> Arena<N> {
    /// An empty arena (its pages are touched only once used).
    pub const fn new() -> Self {
        Arena {
            buf: UnsafeCell::new([0; N]),
            next: AtomicUsize::new(0),
        }
    }

    fn base(&self) -> usize {
        self.buf.get() as usize
    }

    /// Whether `p` points into this arena's buffer.
    pub fn owns(&self, p: *const u8) -> bool {
        (self.base()..self.base() + N).contains(&(p as usize))
    }

    /// Bytes handed out so far.
    pub fn used(&self) -> usize {
        self.next.load(Ordering::Relaxed)
    }

    /// Reserves `layout` in the buffer; `None` when it does not fit.
    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        let base = self.base();
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            // Layout guarantees a power-of-two alignment; offsets stay far below usize::MAX.
            let start = (base + cur).next_multiple_of(layout.align()) - base;
            let end = start.checked_add(layout.size()).filter(|&e| e <= N)?;
            match self
                .next
                .compare_exchange_weak(cur, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some((base + start) as *mut u8),
                Err(now) => cur = now,
            }
        }
    }
}

impl<const N: usize> Default for Arena<N> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: blocks are disjoint (see `Sync`), aligned as asked and `layout.size()` long; blocks
// from `System` are returned to it, arena blocks never are.
unsafe impl<const N: usize> GlobalAlloc for Arena<N> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            Some(p) => p,
            // SAFETY: the caller's layout contract is passed on unchanged.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.owns(ptr) {
            // SAFETY: not ours, so `System` allocated it with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A growing buffer (stdin read to its end, an output string) is usually the newest
        // block: it grows in place instead of being copied at each doubling.
        if self.owns(ptr) {
            let start = ptr as usize - self.base();
            let end = start + layout.size();
            if new_size <= N - start
                && self
                    .next
                    .compare_exchange(end, start + new_size, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                return ptr;
            }
            if new_size <= layout.size() {
                // An older block that shrinks keeps its place (its tail is not reused).
                return ptr;
            }
        }
        // SAFETY: as `GlobalAlloc::realloc`'s default: a new block of the new size, the old
        // contents copied (the smaller of the two sizes), the old block released.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arena<const N: usize>() -> Box<Arena<N>> {
        Box::new(Arena::new())
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_from_the_buffer() {
        let a = arena::<4096>();
        let mut blocks = Vec::new();
        for (size, align) in [(1, 1), (24, 8), (3, 1), (64, 64), (10, 2), (100, 16)] {
            let l = Layout::from_size_align(size, align).unwrap();
            let p = unsafe { a.alloc(l) };
            assert!(a.owns(p), "a small block comes from the arena");
            assert_eq!(p as usize % align, 0, "{size} bytes aligned to {align}");
            unsafe { std::ptr::write_bytes(p, size as u8, size) };
            blocks.push((p, size));
        }
        for (p, size) in &blocks {
            let bytes = unsafe { std::slice::from_raw_parts(*p, *size) };
            assert!(
                bytes.iter().all(|b| *b == *size as u8),
                "no block overlaps another"
            );
        }
    }

    #[test]
    fn what_does_not_fit_comes_from_the_system_and_goes_back_to_it() {
        let a = arena::<4096>();
        let l = Layout::from_size_align(8192, 8).unwrap();
        let p = unsafe { a.alloc(l) };
        assert!(!p.is_null());
        assert!(!a.owns(p));
        unsafe { a.dealloc(p, l) };
        // The arena is untouched and still serves small blocks.
        assert_eq!(a.used(), 0);
        let small = unsafe { a.alloc(Layout::from_size_align(16, 8).unwrap()) };
        assert!(a.owns(small));
    }

    #[test]
    fn the_newest_block_grows_in_place_and_an_older_one_moves_with_its_contents() {
        let a = arena::<4096>();
        let l = Layout::from_size_align(16, 8).unwrap();
        let old = unsafe { a.alloc(l) };
        unsafe { std::ptr::write_bytes(old, 7, 16) };
        let newest = unsafe { a.alloc(l) };
        let grown = unsafe { a.realloc(newest, l, 256) };
        assert_eq!(grown, newest, "the newest block grows where it is");
        assert_eq!(a.used(), 16 + 256);
        let moved = unsafe { a.realloc(old, l, 64) };
        assert_ne!(moved, old);
        let bytes = unsafe { std::slice::from_raw_parts(moved, 16) };
        assert!(
            bytes.iter().all(|b| *b == 7),
            "contents move with the block"
        );
        // Past the arena's end the block moves to the system allocator, contents intact.
        let big = unsafe { a.realloc(moved, Layout::from_size_align(64, 8).unwrap(), 8192) };
        assert!(!a.owns(big));
        assert!(unsafe { std::slice::from_raw_parts(big, 16) }
            .iter()
            .all(|b| *b == 7));
        unsafe { a.dealloc(big, Layout::from_size_align(8192, 8).unwrap()) };
    }

    #[test]
    fn concurrent_callers_get_disjoint_blocks() {
        let a: &'static Arena<65536> = Box::leak(arena::<65536>());
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                std::thread::spawn(move || {
                    let l = Layout::from_size_align(32, 8).unwrap();
                    (0..100)
                        .map(|_| {
                            let p = unsafe { a.alloc(l) };
                            unsafe { std::ptr::write_bytes(p, t, 32) };
                            p as usize
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<usize> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_unstable();
        assert!(all.windows(2).all(|w| w[1] - w[0] >= 32), "blocks overlap");
    }
}
