//! The binary's allocator: mimalloc, asked through its plain entry points whenever the
//! layout's alignment is one every mimalloc block already has.
//!
//! `mimalloc::MiMalloc` sends every request through `mi_malloc_aligned`: a request of more
//! than 1 KiB (a task's future, the engine's tables, a module ticket) then takes its generic
//! path, which over-allocates by the alignment and adjusts the pointer. `mi_malloc` blocks
//! are aligned to 16 bytes (`MI_MAX_ALIGN_SIZE`) when the size is at least that, and to the
//! size's own alignment below it, as the C library's `malloc` is; std's `System` allocator
//! takes the same shortcut.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc, mi_zalloc_aligned,
};

/// The alignment of every `mi_malloc` block of at least this size.
const MIN_ALIGN: usize = 16;

/// Whether `mi_malloc(size)` is aligned enough for `layout`.
fn plain(align: usize, size: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

pub struct Mimalloc;

// SAFETY: every entry point is mimalloc's own, with a block from mimalloc freed by `mi_free`;
// the plain ones are used only where their blocks meet the layout's alignment (`plain`).
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi_malloc(layout.size()) as *mut u8
            } else {
                mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi_zalloc(layout.size()) as *mut u8
            } else {
                mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from one of the entry points above.
        unsafe { mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl; the new block keeps the old layout's alignment.
        unsafe {
            if plain(layout.align(), new_size) {
                mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}
