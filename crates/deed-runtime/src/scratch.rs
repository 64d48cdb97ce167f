//! Per-thread scratch buffers, kept from one kernel call to the next.
//!
//! Kernels need temporary buffers: a convolution's padded input, its patches and its
//! product before the write-back, a matrix product's packed panels. Allocating them on
//! every call costs an allocation, a zero fill the kernel then overwrites, and, for
//! large ones, fresh pages faulted in, on every run of every node. A [`Scratch`]
//! borrows a buffer kept by the calling thread instead and gives it back when dropped.
//!
//! A borrowed buffer holds whatever its last user left in it: [`Scratch::with_len`]
//! only fills the part that grows, and a buffer lent shorter keeps its full length
//! for the next user. Every user writes each element before it reads it
//! (the property tests run many cases on one thread one after another, so a user that
//! read a stale value would give the wrong bits). Nothing unsafe is involved: every
//! element is an initialized value of its type.
//!
//! Each thread keeps at most [`KEEP_BUFFERS`] buffers of at most [`KEEP_BYTES`] each;
//! larger ones are freed when dropped, so a model with huge activations does not leave
//! their size allocated after its run.
//!
//! Outputs work the same way, across nodes: when a plan frees an intermediate tensor
//! after its last reader (or the trace's hashing thread hands it back, when that held
//! it last: see [`crate::hasher`]), its buffer goes to the thread's [`recycle`] list,
//! and a kernel that writes every element of its output takes it from [`output`]
//! instead of a zeroed new allocation.

use std::any::Any;
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

use deed_types::TensorData;

/// Buffers kept per thread.
const KEEP_BUFFERS: usize = 8;
/// Largest buffer kept, in bytes of capacity.
const KEEP_BYTES: usize = 16 << 20;

thread_local! {
    static FREE: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of [`Scratch::with_len`] elements borrowed from the calling thread's free
/// list (see the module docs). It derefs to a slice of exactly that length; the buffer
/// behind it may be longer, and keeps its longer length (all of it initialized) for
/// the next user.
pub(crate) struct Scratch<T: Copy + 'static> {
    buf: Vec<T>,
    len: usize,
}

impl<T: Copy + 'static> Scratch<T> {
    /// A buffer of exactly `len` elements whose values are unspecified (left by an
    /// earlier user, or `fill` where the buffer grew). Takes the shortest kept buffer
    /// at least `len` long, else the longest one there is.
    pub(crate) fn with_len(len: usize, fill: T) -> Scratch<T> {
        let mut buf = take::<T>(len);
        if buf.len() < len {
            if buf.capacity() < len {
                // Growing would copy the stale contents first: start afresh.
                buf = Vec::with_capacity(len);
            }
            buf.resize(len, fill);
        }
        Scratch { buf, len }
    }
}

/// The kept `Vec<T>` best fitting `len` (see [`Scratch::with_len`]), or a new empty one.
fn take<T: 'static>(len: usize) -> Vec<T> {
    FREE.try_with(|free| {
        let mut free = free.try_borrow_mut().ok()?;
        let mut best: Option<(usize, usize)> = None;
        for (i, b) in free.iter().enumerate() {
            let Some(v) = b.downcast_ref::<Vec<T>>() else {
                continue;
            };
            let n = v.len();
            let better = match best {
                None => true,
                Some((_, m)) if m >= len => n >= len && n < m,
                Some((_, m)) => n > m,
            };
            if better {
                best = Some((i, n));
            }
        }
        let (i, _) = best?;
        free.swap_remove(i).downcast::<Vec<T>>().ok().map(|b| *b)
    })
    .ok()
    .flatten()
    .unwrap_or_default()
}

impl<T: Copy + 'static> Drop for Scratch<T> {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.buf);
        if v.is_empty() || v.capacity().saturating_mul(size_of::<T>()) > KEEP_BYTES {
            return;
        }
        // A thread being torn down, or a nested borrow: the buffer is simply freed.
        let _ = FREE.try_with(|free| {
            if let Ok(mut free) = free.try_borrow_mut() {
                if free.len() < KEEP_BUFFERS {
                    free.push(Box::new(v));
                }
            }
        });
    }
}

/// Freed output buffers kept per thread (see [`output`]).
const KEEP_OUTPUTS: usize = 16;
/// Their total capacity, in bytes.
const KEEP_OUTPUT_BYTES: usize = 32 << 20;
/// Freed output buffers of one element type and capacity kept per thread. Kernels
/// that do not take their output from [`output`] (the elementwise ones allocate
/// theirs) free more buffers of the sizes they write than the list gives out. Without
/// a bound per size those filled the list, and the kernels that take their outputs
/// from it found none of the sizes they asked for and zero-filled new allocations: a
/// traced run of the benchmark CNN, whose buffers come back from the hashing thread
/// later and in another order, missed 20 to 30 times a run, the int8 MLP about 10
/// times traced and 17 untraced (its integer products' i32 accumulators found only
/// f32 buffers of their size); now neither misses after its first run.
const KEEP_SAME: usize = 4;

/// A freed output buffer: a `Vec<T>` and its capacity in bytes.
struct Kept {
    buf: Box<dyn Any>,
    bytes: usize,
}

thread_local! {
    static OUTPUTS: RefCell<Vec<Kept>> = const { RefCell::new(Vec::new()) };
}

/// A `Vec` of exactly `len` elements for a node's output, whose values are
/// unspecified: the buffer of an intermediate tensor this thread freed ([`recycle`]),
/// with its stale values, or a new one filled with `fill`. Only kernels that write
/// every element take one. Reusing the storage of dead intermediates saves the zero
/// fill of a new allocation and the page faults of memory the allocator had given back
/// to the system.
pub(crate) fn output<T: Clone + 'static>(len: usize, fill: T) -> Vec<T> {
    let found = OUTPUTS
        .try_with(|free| {
            let mut free = free.try_borrow_mut().ok()?;
            // The smallest buffer that holds `len` without holding twice as much, the
            // one freed last of those (the likeliest still in this core's cache).
            let mut best: Option<(usize, usize)> = None;
            for (i, k) in free.iter().enumerate() {
                let Some(v) = k.buf.downcast_ref::<Vec<T>>() else {
                    continue;
                };
                let cap = v.capacity();
                if cap >= len && cap / 2 <= len && best.is_none_or(|(_, c)| cap <= c) {
                    best = Some((i, cap));
                }
            }
            let (i, _) = best?;
            free.remove(i).buf.downcast::<Vec<T>>().ok().map(|b| *b)
        })
        .ok()
        .flatten();
    match found {
        Some(mut v) => {
            v.truncate(len);
            v.resize(len, fill);
            v
        }
        None => vec![fill; len],
    }
}

/// Writes one value into every 64-byte cache line of `data`, a freed buffer whose
/// values no longer matter, so that the calling thread's core holds its lines for
/// writing. The trace's hashing thread does this to the buffers it frees after hashing
/// them: the lines it read are then shared between its core and the core of the run
/// that wrote them, and the run's next write into them (the buffer recycled for a later
/// output) had to take each line back from the other core. On the 2-core AMD EPYC
/// (Zen 4) virtual machine the benchmarks ran on, rewriting 128 KiB that the other
/// core had just read took 14 µs, against 1.2 µs for lines only the writing core held,
/// and 2 µs once the reading core had written one value per line (which took it
/// 1.3 µs); at times when the host placed the two virtual CPUs further apart, 58 µs
/// against 5.5 µs claimed. Only the types [`recycle`] keeps are written.
pub(crate) fn claim(data: &mut TensorData) {
    fn touch<T: Copy>(v: &mut [T], value: T) {
        let step = (64 / size_of::<T>()).max(1);
        for x in v.iter_mut().step_by(step) {
            *x = value;
        }
    }
    match data {
        TensorData::F32(v) => touch(v, 0.0),
        TensorData::F64(v) => touch(v, 0.0),
        TensorData::I32(v) => touch(v, 0),
        TensorData::I64(v) => touch(v, 0),
        TensorData::U8(v) => touch(v, 0),
        TensorData::I8(v) => touch(v, 0),
        _ => {}
    }
}

/// Leaves a freed buffer of `len` f32s full of NaNs with a payload where [`output`]
/// takes its next buffer from, so that a test of a kernel writing into it sees any
/// element the kernel failed to write.
#[cfg(test)]
pub(crate) fn leave_stale_f32(len: usize) {
    recycle(TensorData::F32(vec![f32::from_bits(0x7FA0_0001); len]));
}

/// Keeps the buffer of `data`, a tensor no one else holds any more, for [`output`] on
/// this thread, unless the thread already keeps [`KEEP_SAME`] buffers of its type and
/// capacity or it alone exceeds [`KEEP_OUTPUT_BYTES`] (then it is freed). The buffers
/// freed longest ago make room for it: at most [`KEEP_OUTPUTS`] buffers of
/// [`KEEP_OUTPUT_BYTES`] in all.
pub(crate) fn recycle(data: TensorData) {
    fn keep<T: 'static>(v: Vec<T>) {
        let bytes = v.capacity().saturating_mul(size_of::<T>());
        if bytes == 0 || bytes > KEEP_OUTPUT_BYTES {
            return;
        }
        let _ = OUTPUTS.try_with(|free| {
            if let Ok(mut free) = free.try_borrow_mut() {
                let same = |k: &&Kept| k.bytes == bytes && k.buf.is::<Vec<T>>();
                if free.iter().filter(same).count() >= KEEP_SAME {
                    return;
                }
                // Oldest first; an empty list holds this one (`bytes` is within bounds).
                let mut held: usize = free.iter().map(|k| k.bytes).sum();
                while !free.is_empty()
                    && (free.len() >= KEEP_OUTPUTS || held + bytes > KEEP_OUTPUT_BYTES)
                {
                    held -= free.remove(0).bytes;
                }
                free.push(Kept {
                    buf: Box::new(v),
                    bytes,
                });
            }
        });
    }
    match data {
        TensorData::F32(v) => keep(v),
        TensorData::F64(v) => keep(v),
        TensorData::I32(v) => keep(v),
        TensorData::I64(v) => keep(v),
        TensorData::U8(v) => keep(v),
        TensorData::I8(v) => keep(v),
        _ => {}
    }
}

impl<T: Copy + 'static> Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[..self.len]
    }
}

impl<T: Copy + 'static> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claiming_writes_one_value_per_cache_line() {
        let mut d = TensorData::F32(vec![5.0; 100]);
        claim(&mut d);
        let TensorData::F32(v) = d else {
            unreachable!()
        };
        for (i, x) in v.iter().enumerate() {
            assert_eq!(*x, if i % 16 == 0 { 0.0 } else { 5.0 }, "element {i}");
        }
        let mut d = TensorData::U8(vec![9; 130]);
        claim(&mut d);
        let TensorData::U8(v) = d else { unreachable!() };
        assert_eq!(v.iter().filter(|&&x| x == 0).count(), 3);
        // Nothing to write: no panic.
        claim(&mut TensorData::I64(Vec::new()));
    }

    #[test]
    fn a_buffer_is_reused_with_its_values_and_keeps_its_length() {
        let first_ptr = {
            let mut s = Scratch::with_len(1000, 0.0f32);
            s.iter_mut().for_each(|v| *v = 7.0);
            s.as_ptr()
        };
        // The same allocation comes back, shorter, with the old values.
        let s = Scratch::with_len(10, 0.0f32);
        assert_eq!(s.as_ptr(), first_ptr);
        assert_eq!(s.len(), 10);
        assert!(s.iter().all(|&v| v == 7.0));
        drop(s);
        // It kept all 1000 values: asked for 1000 again, nothing is filled.
        let s = Scratch::with_len(1000, 0.0f32);
        assert_eq!(s.as_ptr(), first_ptr);
        assert!(s.iter().all(|&v| v == 7.0));
        // A second buffer at the same time is another allocation; growth is filled.
        let t = Scratch::with_len(2000, 1.0f32);
        assert_ne!(t.as_ptr(), first_ptr);
        assert!(t.iter().all(|&v| v == 1.0));
        drop((s, t));
        // Best fit: the 2000-long buffer serves 1500, the 1000-long one serves 5.
        let a = Scratch::with_len(1500, 0.0f32);
        let b = Scratch::with_len(5, 0.0f32);
        assert_eq!(b.as_ptr(), first_ptr);
        assert_eq!(a.len(), 1500);
        assert!(a.iter().all(|&v| v == 1.0));
        // Another type never receives these.
        let c = Scratch::with_len(5, 3u8);
        assert!(c.iter().all(|&v| v == 3));
    }

    #[test]
    fn freed_outputs_serve_outputs_that_fit_them() {
        let v = vec![7.0f32; 1000];
        let ptr = v.as_ptr();
        recycle(TensorData::F32(v));
        // Too large for 400 (it would hold more than twice that): a new buffer.
        let small = output(400, 0.0f32);
        assert_ne!(small.as_ptr(), ptr);
        assert!(small.iter().all(|&x| x == 0.0));
        // Of another type: a new buffer.
        let other = output(900, 1i32);
        assert!(other.iter().all(|&x| x == 1));
        // 900 fits: the same allocation, with its stale values.
        let again = output(900, 0.0f32);
        assert_eq!(again.as_ptr(), ptr);
        assert_eq!(again.len(), 900);
        assert!(again.iter().all(|&x| x == 7.0));
        // Growing within the capacity fills only the new part.
        recycle(TensorData::F32(again));
        let grown = output(1000, 3.0f32);
        assert_eq!(grown.as_ptr(), ptr);
        assert!(grown[..900].iter().all(|&x| x == 7.0));
        assert!(grown[900..].iter().all(|&x| x == 3.0));
        // The list is bounded in bytes: a buffer past the bound is freed.
        recycle(TensorData::F32(vec![0.0; KEEP_OUTPUT_BYTES / 4 + 1]));
        let held = OUTPUTS.with(|f| f.borrow().iter().map(|k| k.bytes).sum::<usize>());
        assert!(held <= KEEP_OUTPUT_BYTES);
        OUTPUTS.with(|f| f.borrow_mut().clear());
    }

    #[test]
    fn the_list_keeps_the_latest_buffers_and_a_few_of_each_size() {
        OUTPUTS.with(|f| f.borrow_mut().clear());
        let kept = || OUTPUTS.with(|f| f.borrow().iter().map(|k| k.bytes).collect::<Vec<_>>());
        // Beyond KEEP_SAME buffers of one type and size, more of them are freed.
        for _ in 0..KEEP_SAME + 2 {
            recycle(TensorData::F32(vec![0.0; 1024]));
        }
        assert_eq!(kept(), vec![4096; KEEP_SAME]);
        recycle(TensorData::I32(vec![0; 1024]));
        assert_eq!(kept(), vec![4096; KEEP_SAME + 1]);
        // Other sizes still find room; when the list is full, the oldest make way.
        for i in 0..KEEP_OUTPUTS {
            recycle(TensorData::U8(vec![0; 100 + i]));
        }
        let expect: Vec<usize> = (0..KEEP_OUTPUTS).map(|i| 100 + i).collect();
        assert_eq!(kept(), expect);
        // Of two buffers that fit equally, the one freed last comes out first.
        OUTPUTS.with(|f| f.borrow_mut().clear());
        let (a, b) = (vec![1.0f32; 64], vec![2.0f32; 64]);
        let pb = b.as_ptr();
        recycle(TensorData::F32(a));
        recycle(TensorData::F32(b));
        let got = output(64, 0.0f32);
        assert_eq!((got.as_ptr(), got[0]), (pb, 2.0));
        OUTPUTS.with(|f| f.borrow_mut().clear());
    }

    #[test]
    fn huge_buffers_are_not_kept() {
        drop(Scratch::with_len(KEEP_BYTES / 4 + 1, 0.0f32));
        drop(Scratch::with_len(100, 0.0f32));
        let kept: Vec<usize> = FREE.with(|f| {
            f.borrow()
                .iter()
                .filter_map(|b| b.downcast_ref::<Vec<f32>>())
                .map(Vec::len)
                .collect()
        });
        assert_eq!(kept, [100]);
    }
}
