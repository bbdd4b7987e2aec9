//! The process allocator: mimalloc, called the way its fast path wants.
//!
//! The `mimalloc` crate passes every Rust allocation to `mi_malloc_aligned`,
//! even at the alignment of 1 or 8 that almost all of them have. In
//! mimalloc 3 that call takes its fast path only when the size class it
//! wants has a free block ready; otherwise it falls to a generic path that,
//! for a size that is not a power of two, over-allocates and aligns by hand
//! (a dozen of a proxied request's allocations went that way; figures in
//! docs/performance-history.md). Plain `mi_malloc` has no such detour,
//! and every block it hands out is aligned to 8 bytes at least (its size
//! classes are whole words), so alignments up to 8 go there; larger ones,
//! and any block that ever came back misaligned, take the aligned call.
//!
//! mimalloc is built with `no_thp` (Cargo.toml): its arenas asked for
//! transparent huge pages, which doubled idle RSS (docs/performance-history.md,
//! "Memory").

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Alignment every `mi_malloc` block has: its size classes are whole words.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc as the global allocator (see the module docs).
pub struct Allocator;

fn fits_word(layout: Layout) -> bool {
    layout.align() <= WORD
}

fn aligned(p: *mut c_void, layout: Layout) -> bool {
    (p as usize) & (layout.align() - 1) == 0
}

/// `plain` where a word's alignment is enough and the block came back
/// aligned (always, by mimalloc's size classes), `aligned` otherwise.
///
/// # Safety
///
/// `plain` and `aligned_call` are mimalloc's allocation entry points of
/// the same kind (both zeroing or neither), and `layout` has a non-zero
/// size, as `GlobalAlloc::alloc` requires of its callers.
#[inline]
unsafe fn allocate(
    layout: Layout,
    plain: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned_call: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    // SAFETY: mimalloc's entry points take any size and alignment (a power
    // of two, as `Layout` guarantees); `mi_free` takes the block `plain`
    // just returned (or null).
    unsafe {
        if fits_word(layout) {
            let p = plain(layout.size());
            if aligned(p, layout) {
                return p.cast();
            }
            mi::mi_free(p);
        }
        aligned_call(layout.size(), layout.align()).cast()
    }
}

// SAFETY: every path returns memory from mimalloc of at least `layout.size()`
// bytes at `layout.align()` (checked, with a fallback to the aligned call),
// and `dealloc`/`realloc` hand mimalloc back its own pointers.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: a matching pair of entry points; `layout` is the caller's.
        unsafe { allocate(layout, mi::mi_malloc, mi::mi_malloc_aligned) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: a matching (zeroing) pair; `layout` is the caller's.
        unsafe { allocate(layout, mi::mi_zalloc, mi::mi_zalloc_aligned) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from mimalloc.
        unsafe { mi::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from mimalloc with `layout`; `p` is the block
        // `mi_realloc` moved it to (null leaves `ptr` valid, as `realloc`
        // must); `q`, when not null, has room for `new_size` bytes and does
        // not overlap `p`.
        unsafe {
            if fits_word(layout) {
                let p = mi::mi_realloc(ptr.cast(), new_size);
                if aligned(p, layout) {
                    return p.cast();
                }
                // Misaligned (never seen): move it to an aligned block.
                let q = mi::mi_malloc_aligned(new_size, layout.align());
                if q.is_null() {
                    // `ptr` is gone (moved to `p`) and `p` is misaligned:
                    // neither can be returned, and null would tell the
                    // caller `ptr` is still valid.
                    let wanted = Layout::from_size_align_unchecked(new_size, layout.align());
                    std::alloc::handle_alloc_error(wanted);
                }
                std::ptr::copy_nonoverlapping(p.cast::<u8>(), q.cast::<u8>(), new_size);
                mi::mi_free(p);
                return q.cast();
            }
            mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_have_the_alignment_asked_for() {
        let a = Allocator;
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1, 3, 8, 24, 40, 100, 1000, 5000, 70_000] {
                let layout = Layout::from_size_align(size.max(align), align).unwrap();
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "alloc size {size} align {align}");
                    p.write_bytes(0xA5, layout.size());
                    let q = a.realloc(p, layout, layout.size() * 3);
                    assert_eq!(q as usize % align, 0, "realloc size {size} align {align}");
                    assert_eq!(*q, 0xA5, "realloc kept the contents");
                    a.dealloc(
                        q,
                        Layout::from_size_align(layout.size() * 3, align).unwrap(),
                    );
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!(std::slice::from_raw_parts(z, layout.size())
                        .iter()
                        .all(|&b| b == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
