//! The plugin's allocator: blocks of [`BIG`] bytes or more are mapped from the kernel and
//! unmapped when freed; smaller ones go to the system allocator.
//!
//! Why: the plugin's large buffers (the records handed to the host, the chunks the workers
//! fill, decompression buffers) are made on one thread and freed on another, a few times a
//! second. glibc serves the first ones with `mmap`, then raises its threshold to the size
//! of the largest freed block, so every later one comes from a per-thread arena that keeps
//! the pages after the free. Measured in the real Fluent Bit 5.1.1 over the bench corpus
//! (`scripts/bench fb-backlog`, 4M batches): peak 126 MB and 126 MB still resident once idle;
//! with glibc told to keep its threshold (`MALLOC_MMAP_THRESHOLD_`, which changes the host's
//! allocations too) 60 MB and 26 MB. This allocator does the same for the plugin's own
//! blocks only, without touching the host's settings. Linux only, as the plugin is.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// Blocks at least this large are mapped (glibc's own starting threshold).
pub const BIG: usize = 128 << 10;

/// Mapped blocks start on a page; a block asking for more alignment than that goes to the
/// system allocator whatever its size (none of the plugin's do).
const PAGE: usize = 4096;

pub struct BigAlloc;

fn mapped(layout: Layout) -> bool {
    layout.size() >= BIG && layout.align() <= PAGE
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping touches no existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: every block is either mapped (size >= BIG, align <= PAGE, decided from the layout
// the caller passes back on free and realloc, which Rust requires to be the block's own) or
// the system allocator's; each is returned to where it came from. Mappings are page-aligned
// and zeroed.
unsafe impl GlobalAlloc for BigAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if mapped(layout) {
            // SAFETY: size is non-zero (>= BIG).
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if mapped(layout) {
            // SAFETY: as in `alloc`; anonymous mappings are zeroed by the kernel.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if mapped(layout) {
            // SAFETY: `p` is a mapping of `layout.size()` bytes made by `map` (see above).
            unsafe { libc::munmap(p.cast(), layout.size()) };
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.dealloc(p, layout) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (mapped(layout), mapped(new)) {
            (true, true) => {
                // SAFETY: `p` is our mapping of `layout.size()` bytes; the kernel moves or
                // grows it in place, keeping its contents and page alignment.
                let q = unsafe {
                    libc::mremap(p.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE)
                };
                if q == libc::MAP_FAILED {
                    ptr::null_mut()
                } else {
                    q.cast()
                }
            }
            // SAFETY: both blocks are the system allocator's.
            (false, false) => unsafe { System.realloc(p, layout, new_size) },
            _ => {
                // Crossing the threshold: a new block from the other side, then a copy.
                // SAFETY: `new` is a valid non-zero layout; the copy stays within both blocks.
                unsafe {
                    let q = self.alloc(new);
                    if !q.is_null() {
                        ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                        self.dealloc(p, layout);
                    }
                    q
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cross_the_threshold_both_ways_keeping_their_bytes() {
        let a = BigAlloc;
        let small = Layout::from_size_align(1000, 8).unwrap();
        // SAFETY: each block is used within its size and freed with its own layout.
        unsafe {
            let p = a.alloc(small);
            assert!(!p.is_null());
            for i in 0..1000 {
                *p.add(i) = (i % 251) as u8;
            }
            // Small -> big: copied into a mapping.
            let q = a.realloc(p, small, 3 * BIG);
            assert!(!q.is_null());
            assert_eq!(q as usize % PAGE, 0);
            for i in 0..1000 {
                assert_eq!(*q.add(i), (i % 251) as u8);
            }
            *q.add(3 * BIG - 1) = 7;
            // Big -> bigger: remapped.
            let big = Layout::from_size_align(3 * BIG, 8).unwrap();
            let r = a.realloc(q, big, 10 * BIG);
            assert!(!r.is_null());
            assert_eq!(*r.add(999), (999 % 251) as u8);
            assert_eq!(*r.add(3 * BIG - 1), 7);
            // Big -> small: copied back to the system allocator.
            let bigger = Layout::from_size_align(10 * BIG, 8).unwrap();
            let s = a.realloc(r, bigger, 500);
            assert!(!s.is_null());
            assert_eq!(*s.add(499), (499 % 251) as u8);
            a.dealloc(s, Layout::from_size_align(500, 8).unwrap());
            // Zeroed big blocks are zero.
            let z = a.alloc_zeroed(big);
            assert!((0..3 * BIG).step_by(4093).all(|i| *z.add(i) == 0));
            a.dealloc(z, big);
            // A block asking for more than a page of alignment is the system's.
            let odd = Layout::from_size_align(BIG, 2 * PAGE).unwrap();
            let o = a.alloc(odd);
            assert!(!o.is_null());
            assert_eq!(o as usize % (2 * PAGE), 0);
            a.dealloc(o, odd);
        }
    }
}
